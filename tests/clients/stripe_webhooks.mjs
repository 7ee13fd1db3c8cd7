// Posts Stripe events to tenantry's POST /webhooks/stripe, signed by Stripe's own Node library
// (stripe.webhooks.generateTestHeaderString), and checks each answer. Exits non-zero when any
// answer is wrong.
//
//   WEBHOOK_URL=http://127.0.0.1:8080/webhooks/stripe WEBHOOK_SECRET=whsec_... \
//   STRIPE_CUSTOMER=cus_... node tests/clients/stripe_webhooks.mjs
//
// STRIPE_CUSTOMER must be the Stripe customer of a tenant whose billing state is active
// (tests/api/billing.rs sets one up). The script sends a failed payment and a payment: the
// tenant ends active, with two events recorded.
import Stripe from 'stripe';

const url = process.env.WEBHOOK_URL;
const secret = process.env.WEBHOOK_SECRET;
const customer = process.env.STRIPE_CUSTOMER;
if (!url || !secret || !customer) {
  console.error('set WEBHOOK_URL, WEBHOOK_SECRET and STRIPE_CUSTOMER');
  process.exit(2);
}

const stripe = new Stripe('sk_test_unused');
const failures = [];
function check(what, got, want) {
  const ok = JSON.stringify(got) === JSON.stringify(want);
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}: ${JSON.stringify(got)}${ok ? '' : ` (wanted ${JSON.stringify(want)})`}`);
  if (!ok) failures.push(what);
}

const now = Math.floor(Date.now() / 1000);
let sequence = 0;
function event(type, created, status) {
  sequence += 1;
  return JSON.stringify({
    id: `evt_node_${now}_${sequence}`,
    object: 'event',
    api_version: '2025-10-29.clover',
    created,
    livemode: false,
    pending_webhooks: 1,
    request: { id: null, idempotency_key: null },
    type,
    data: {
      object: {
        id: 'in_node_1', object: 'invoice', customer, status, currency: 'usd',
        amount_due: 4900, amount_paid: status === 'paid' ? 4900 : 0, created: now - 60,
        period_start: now - 86400 * 30, period_end: now - 60, hosted_invoice_url: null,
      },
    },
  });
}

async function post(payload, header) {
  const headers = { 'content-type': 'application/json' };
  if (header !== undefined) headers['stripe-signature'] = header;
  const response = await fetch(url, { method: 'POST', headers, body: payload });
  const body = await response.json().catch(() => null);
  return { status: response.status, body };
}

function sign(payload, options = {}) {
  return stripe.webhooks.generateTestHeaderString({ payload, secret, ...options });
}

// A failed payment, signed by the library: applied.
const failed = event('invoice.payment_failed', now - 30, 'open');
let r = await post(failed, sign(failed));
check('signed event: status', r.status, 200);
check('signed event: outcome', r.body?.outcome, 'applied');

// The same event again (Stripe retries): accepted, processed once.
r = await post(failed, sign(failed));
check('replayed event: status', r.status, 200);
check('replayed event: outcome', r.body?.outcome, 'duplicate');

// Five concurrent deliveries of one new event: one applies it.
const paid = event('invoice.paid', now - 10, 'paid');
const answers = await Promise.all([1, 2, 3, 4, 5].map(() => post(paid, sign(paid))));
check('concurrent: all 200', answers.map((a) => a.status), [200, 200, 200, 200, 200]);
check(
  'concurrent: applied once',
  answers.filter((a) => a.body?.outcome === 'applied').length,
  1,
);

// Forged: signed with another secret.
const forged = event('invoice.payment_failed', now, 'open');
r = await post(forged, stripe.webhooks.generateTestHeaderString({ payload: forged, secret: 'whsec_attacker' }));
check('forged: status', r.status, 400);
check('forged: code', r.body?.code, 'invalid_signature');

// Stale: signed more than 300 s ago.
r = await post(forged, sign(forged, { timestamp: now - 301 }));
check('stale: status', r.status, 400);
check('stale: code', r.body?.code, 'invalid_signature');

// Tampered: the signature of another body.
r = await post(forged, sign(paid));
check('tampered: status', r.status, 400);

// Unsigned.
r = await post(forged, undefined);
check('unsigned: status', r.status, 400);

if (failures.length > 0) {
  console.error(`${failures.length} check(s) failed: ${failures.join(', ')}`);
  process.exit(1);
}
console.log('all checks passed');
