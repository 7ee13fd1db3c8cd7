// Evaluates tenantry's OFREP endpoint with the OpenFeature JavaScript server SDK and its OFREP
// provider, as an application would. Exits non-zero when any answer is wrong.
//
//   OFREP_BASE_URL=http://127.0.0.1:8080 OFREP_TOKEN=<JWT or API key> node tests/clients/ofrep.mjs
//
// The token's tenant must be on the pro plan and have the flags that tests/api/ofrep.rs
// (define_client_flags) defines. The server SDK stays on 1.18, the last release for Node 18
// (Debian's nodejs, which scripts/services.sh installs where Node is missing).
import { OpenFeature } from '@openfeature/server-sdk';
import { OFREPProvider } from '@openfeature/ofrep-provider';

const baseUrl = process.env.OFREP_BASE_URL;
const token = process.env.OFREP_TOKEN;
if (!baseUrl || !token) {
  console.error('set OFREP_BASE_URL and OFREP_TOKEN');
  process.exit(2);
}

await OpenFeature.setProviderAndWait(
  new OFREPProvider({ baseUrl, headers: [['Authorization', `Bearer ${token}`]] }),
);
const client = OpenFeature.getClient();

const failures = [];
function check(what, got, want) {
  const ok = JSON.stringify(got) === JSON.stringify(want);
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}: ${JSON.stringify(got)}${ok ? '' : ` (wanted ${JSON.stringify(want)})`}`);
  if (!ok) failures.push(what);
}

const beta = await client.getBooleanDetails('client-beta', false);
check('boolean value', beta.value, true);
check('boolean reason', beta.reason, 'TARGETING_MATCH');
check('boolean variant', beta.variant, 'plan');
check('boolean metadata', beta.flagMetadata, { version: 1 });

const banner = await client.getStringDetails('client-banner', 'fallback');
check('string value', banner.value, 'hello');
check('string reason', banner.reason, 'STATIC');

check('integer value', await client.getNumberValue('client-max-rows', 0), 100);
check('float value', await client.getNumberValue('client-ratio', 0), 0.25);

const theme = await client.getObjectDetails('client-theme', {});
check('object value', theme.value, { color: 'gold', dark: true });
check('object variant', theme.variant, 'override');

// Unleash's client specification: 174 is inside a 10 % rollout, 499 outside.
check('rollout 174', await client.getBooleanValue('Feature.flexibleRollout.10', false, { targetingKey: '174' }), true);
check('rollout 499', await client.getBooleanValue('Feature.flexibleRollout.10', true, { targetingKey: '499' }), false);

const missing = await client.getBooleanDetails('client-missing', true);
check('missing flag code', missing.errorCode, 'FLAG_NOT_FOUND');
check('missing flag falls back', missing.value, true);

const mismatch = await client.getBooleanDetails('client-banner', false);
check('type mismatch code', mismatch.errorCode, 'TYPE_MISMATCH');
check('type mismatch falls back', mismatch.value, false);

await OpenFeature.close();
if (failures.length > 0) {
  console.error(`${failures.length} check(s) failed: ${failures.join(', ')}`);
  process.exit(1);
}
console.log('all checks passed');
