//! Settings and branding: every field good and bad, the SSRF check on the logo, the public
//! branding with its ETag, the audit trail and the history, and isolation between tenants.

use serde_json::{json, Value};

use tenantry::auth::Role;

use crate::fixtures::{create_user, expect, id_of, token_for};
use crate::helpers::{assert_problem, spawn_app, TestApp, TestTenant};

fn fields(problem: &Value) -> Vec<String> {
    let mut fields: Vec<String> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap().to_string())
        .collect();
    fields.sort();
    fields
}

async fn patch(app: &TestApp, t: &TestTenant, body: Value) -> reqwest::Response {
    app.patch("/settings", &t.token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn put_branding(app: &TestApp, t: &TestTenant, body: Value) -> reqwest::Response {
    app.http
        .put(app.url("/settings/branding"))
        .bearer_auth(&t.token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn branding_of(app: &TestApp, slug: &str) -> Value {
    expect(
        app.http
            .get(app.url("/branding"))
            .header("X-Tenant-ID", slug)
            .send()
            .await
            .unwrap(),
        200,
    )
    .await
}

#[tokio::test]
async fn settings_start_from_the_defaults_and_are_for_admins() {
    let app = spawn_app().await;
    let t = app.create_tenant("setco").await;
    let body = expect(app.get("/settings", &t.token).send().await.unwrap(), 200).await;
    assert_eq!(
        body,
        json!({"timezone": "UTC", "locale": "en", "version": 0, "branding":
            {"logo_url": null, "primary_color": "#2563eb", "accent_color": "#f59e0b"}})
    );
    let member = create_user(&app, &t.token, "member@setco.example.com", "member").await;
    let as_member = TestTenant {
        id: t.id,
        slug: t.slug.clone(),
        admin_id: t.admin_id,
        admin_email: t.admin_email.clone(),
        admin_password: t.admin_password.clone(),
        token: token_for(&app, t.id, id_of(&member), Role::Member),
    };
    assert_problem(
        app.get("/settings", &as_member.token).send().await.unwrap(),
        403,
        "forbidden",
    )
    .await;
    assert_problem(
        patch(&app, &as_member, json!({"locale": "fr"})).await,
        403,
        "forbidden",
    )
    .await;
    assert_problem(
        put_branding(
            &app,
            &as_member,
            json!({"logo_url": null, "primary_color": "#000000", "accent_color": "#000000"}),
        )
        .await,
        403,
        "forbidden",
    )
    .await;
    assert_problem(
        app.http
            .get(app.url("/settings"))
            .header("X-Tenant-ID", "setco")
            .send()
            .await
            .unwrap(),
        401,
        "unauthorized",
    )
    .await;
}

#[tokio::test]
async fn every_field_good_and_bad() {
    let app = spawn_app().await;
    let t = app.create_tenant("fields").await;

    let good = [
        (
            json!({"timezone": "Europe/Paris"}),
            "/timezone",
            json!("Europe/Paris"),
        ),
        (
            json!({"timezone": "America/Argentina/Buenos_Aires"}),
            "/timezone",
            json!("America/Argentina/Buenos_Aires"),
        ),
        (json!({"timezone": "UTC"}), "/timezone", json!("UTC")),
        (json!({"locale": "fr"}), "/locale", json!("fr")),
        (json!({"locale": "pt-br"}), "/locale", json!("pt-BR")),
        (
            json!({"locale": "zh-Hant-TW"}),
            "/locale",
            json!("zh-Hant-TW"),
        ),
        (
            json!({"branding": {"primary_color": "#A0B1C2"}}),
            "/branding/primary_color",
            json!("#a0b1c2"),
        ),
        (
            json!({"branding": {"accent_color": "#000000"}}),
            "/branding/accent_color",
            json!("#000000"),
        ),
        (
            json!({"branding": {"logo_url": "https://93.184.216.34/logo.png"}}),
            "/branding/logo_url",
            json!("https://93.184.216.34/logo.png"),
        ),
        (
            json!({"branding": {"logo_url": null}}),
            "/branding/logo_url",
            Value::Null,
        ),
    ];
    for (body, pointer, stored) in good {
        let answer = expect(patch(&app, &t, body.clone()).await, 200).await;
        assert_eq!(answer.pointer(pointer), Some(&stored), "{body}");
        let read = expect(app.get("/settings", &t.token).send().await.unwrap(), 200).await;
        assert_eq!(read.pointer(pointer), Some(&stored), "{body}");
    }

    let bad = [
        (json!({"timezone": "Mars/Olympus_Mons"}), "timezone"),
        (json!({"timezone": ""}), "timezone"),
        (json!({"timezone": 1}), "timezone"),
        (json!({"timezone": null}), "timezone"),
        (json!({"timezone": "Europe/Paris\u{0}"}), "timezone"),
        (json!({"locale": "not a locale"}), "locale"),
        (json!({"locale": "en_US"}), "locale"),
        (json!({"locale": ""}), "locale"),
        (json!({"locale": ["en"]}), "locale"),
        (
            json!({"branding": {"primary_color": "blue"}}),
            "branding.primary_color",
        ),
        (
            json!({"branding": {"primary_color": "#fff"}}),
            "branding.primary_color",
        ),
        (
            json!({"branding": {"primary_color": "#gggggg"}}),
            "branding.primary_color",
        ),
        (
            json!({"branding": {"accent_color": "000000"}}),
            "branding.accent_color",
        ),
        (
            json!({"branding": {"accent_color": null}}),
            "branding.accent_color",
        ),
        (
            json!({"branding": {"logo_url": "http://93.184.216.34/logo.png"}}),
            "branding.logo_url",
        ),
        (
            json!({"branding": {"logo_url": "ftp://93.184.216.34/logo.png"}}),
            "branding.logo_url",
        ),
        (
            json!({"branding": {"logo_url": "not a url"}}),
            "branding.logo_url",
        ),
        (json!({"branding": {"logo_url": 5}}), "branding.logo_url"),
        (
            json!({"branding": {"logo_url": format!("https://93.184.216.34/{}", "a".repeat(2100))}}),
            "branding.logo_url",
        ),
        (json!({"branding": {"font": "Comic Sans"}}), "branding.font"),
        (json!({"branding": "red"}), "branding"),
        (json!({"theme": "dark"}), "theme"),
        (json!({}), "body"),
    ];
    for (body, field) in bad {
        let problem = assert_problem(
            patch(&app, &t, body.clone()).await,
            422,
            "validation_failed",
        )
        .await;
        assert_eq!(fields(&problem), [field], "{body}");
    }
    // Several bad fields at once: every one is named, and nothing is written.
    let before = expect(app.get("/settings", &t.token).send().await.unwrap(), 200).await;
    let problem = assert_problem(
        patch(
            &app,
            &t,
            json!({"timezone": "Nowhere", "locale": "fr", "branding": {"primary_color": "x", "accent_color": "#111111"}}),
        )
        .await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(fields(&problem), ["branding.primary_color", "timezone"]);
    assert_eq!(
        expect(app.get("/settings", &t.token).send().await.unwrap(), 200).await,
        before
    );
    let r = app
        .patch("/settings", &t.token)
        .header("content-type", "application/json")
        .body("[1, 2")
        .send()
        .await
        .unwrap();
    assert_problem(r, 400, "bad_request").await;

    // PUT /settings/branding: the whole branding.
    let b = expect(
        put_branding(
            &app,
            &t,
            json!({"logo_url": "https://[2606:2800:220:1:248:1893:25c8:1946]/l.svg", "primary_color": "#ABCDEF", "accent_color": "#012345"}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(
        b,
        json!({"logo_url": "https://[2606:2800:220:1:248:1893:25c8:1946]/l.svg", "primary_color": "#abcdef", "accent_color": "#012345"})
    );
    for (body, expected) in [
        (
            json!({"primary_color": "#000000", "accent_color": "#000000"}),
            vec!["logo_url"],
        ),
        (
            json!({"logo_url": null, "primary_color": "black", "accent_color": "#000000"}),
            vec!["primary_color"],
        ),
        (
            json!({"logo_url": null, "primary_color": "#000000", "accent_color": "#00000"}),
            vec!["accent_color"],
        ),
        (
            json!({"logo_url": "http://example.com/l.png", "primary_color": "#000000", "accent_color": "#000000"}),
            vec!["logo_url"],
        ),
        (
            json!({"logo_url": null, "primary_color": "#000000", "accent_color": "#000000", "tenant_id": "x"}),
            vec!["tenant_id"],
        ),
        (json!([]), vec!["body"]),
    ] {
        let problem = assert_problem(
            put_branding(&app, &t, body.clone()).await,
            422,
            "validation_failed",
        )
        .await;
        assert_eq!(fields(&problem), expected, "{body}");
    }
}

#[tokio::test]
async fn logo_urls_pointing_inside_are_refused() {
    let app = spawn_app().await;
    let t = app.create_tenant("ssrf").await;
    for url in [
        "https://127.0.0.1/logo.png",
        "https://10.0.0.1/logo.png",
        "https://192.168.1.10/logo.png",
        "https://172.16.0.1/logo.png",
        "https://169.254.169.254/latest/meta-data/",
        "https://100.64.0.1/logo.png",
        "https://0.0.0.0/logo.png",
        "https://[::1]/logo.png",
        "https://[::ffff:127.0.0.1]/logo.png",
        "https://2130706433/logo.png",
        "https://0x7f000001/logo.png",
        "https://017700000001/logo.png",
        "https://0177.0.0.1/logo.png",
        "https://127.1/logo.png",
        "https://localhost/logo.png",
        "https://localhost./logo.png",
        "https://metadata.google.internal/computeMetadata/v1/",
        "https://[fe80::1]/logo.png",
        "https://[fd00::1]/logo.png",
        "https://224.0.0.1/logo.png",
        "https://user:secret@93.184.216.34/logo.png",
        "https://does-not-resolve.invalid/logo.png",
    ] {
        let problem = assert_problem(
            patch(&app, &t, json!({"branding": {"logo_url": url}})).await,
            422,
            "validation_failed",
        )
        .await;
        assert_eq!(fields(&problem), ["branding.logo_url"], "{url}");
        let problem = assert_problem(
            put_branding(
                &app,
                &t,
                json!({"logo_url": url, "primary_color": "#000000", "accent_color": "#000000"}),
            )
            .await,
            422,
            "validation_failed",
        )
        .await;
        assert_eq!(fields(&problem), ["logo_url"], "{url}");
    }
    assert_eq!(branding_of(&app, "ssrf").await["logo_url"], Value::Null);
}

#[tokio::test]
async fn branding_is_public_cacheable_and_per_tenant() {
    let app = spawn_app().await;
    let a = app.create_tenant("brand-a").await;
    let b = app.create_tenant("brand-b").await;
    expect(
        patch(&app, &a, json!({"branding": {"primary_color": "#aa0000"}})).await,
        200,
    )
    .await;

    // By header and by subdomain, without credentials.
    let by_header = app
        .http
        .get(app.url("/branding"))
        .header("X-Tenant-ID", "brand-a")
        .send()
        .await
        .unwrap();
    assert_eq!(by_header.headers()["cache-control"], "public, max-age=60");
    assert!(by_header.headers()["vary"]
        .to_str()
        .unwrap()
        .contains("X-Tenant-ID"));
    let etag = by_header.headers()["etag"].to_str().unwrap().to_string();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    let body = expect(by_header, 200).await;
    assert_eq!(
        body,
        json!({"logo_url": null, "primary_color": "#aa0000", "accent_color": "#f59e0b"})
    );
    let by_host = app
        .http
        .get(app.url("/branding"))
        .header(
            "Host",
            format!("brand-a.{}:{}", app.config.base_domain, app.port),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(by_host.headers()["etag"].to_str().unwrap(), etag);
    assert_eq!(expect(by_host, 200).await, body);
    assert_eq!(
        branding_of(&app, "brand-b").await["primary_color"],
        "#2563eb"
    );
    assert_eq!(
        branding_of(&app, &b.id.to_string()).await["primary_color"],
        "#2563eb"
    );

    // Conditional requests.
    for given in [
        etag.clone(),
        format!("W/{etag}"),
        format!("\"other\", {etag}"),
        "*".into(),
    ] {
        let r = app
            .http
            .get(app.url("/branding"))
            .header("X-Tenant-ID", "brand-a")
            .header("If-None-Match", given.as_str())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 304, "{given}");
        assert_eq!(r.headers()["etag"].to_str().unwrap(), etag);
        assert!(r.text().await.unwrap().is_empty());
    }
    let r = app
        .http
        .get(app.url("/branding"))
        .header("X-Tenant-ID", "brand-b")
        .header("If-None-Match", etag.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "B's branding is not A's");
    // Another branding, another tag; other settings leave the tag alone.
    expect(patch(&app, &a, json!({"locale": "de"})).await, 200).await;
    let r = app
        .http
        .get(app.url("/branding"))
        .header("X-Tenant-ID", "brand-a")
        .header("If-None-Match", etag.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 304);
    expect(
        patch(&app, &a, json!({"branding": {"accent_color": "#00aa00"}})).await,
        200,
    )
    .await;
    let r = app
        .http
        .get(app.url("/branding"))
        .header("X-Tenant-ID", "brand-a")
        .header("If-None-Match", etag.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_ne!(r.headers()["etag"].to_str().unwrap(), etag);

    // No tenant named: 400; an unknown one: 404; a bad credential: 401.
    assert_problem(
        app.http.get(app.url("/branding")).send().await.unwrap(),
        400,
        "bad_request",
    )
    .await;
    assert_problem(
        app.http
            .get(app.url("/branding"))
            .header("X-Tenant-ID", "nobody-here")
            .send()
            .await
            .unwrap(),
        404,
        "not_found",
    )
    .await;
    assert_problem(
        app.http
            .get(app.url("/branding"))
            .header("X-Tenant-ID", "brand-a")
            .bearer_auth("garbage")
            .send()
            .await
            .unwrap(),
        401,
        "unauthorized",
    )
    .await;
}

#[tokio::test]
async fn every_change_is_audited_and_versioned() {
    let app = spawn_app().await;
    let t = app.create_tenant("history").await;
    expect(
        app.patch("/settings", &t.token)
            .header("X-Request-Id", "settings-1")
            .json(&json!({"timezone": "Asia/Tokyo"}))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    let v = expect(
        app.http
            .put(app.url("/settings/branding"))
            .bearer_auth(&t.token)
            .header("X-Request-Id", "branding-1")
            .json(&json!({"logo_url": null, "primary_color": "#101010", "accent_color": "#202020"}))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(v["primary_color"], "#101010");
    // A change that changes nothing records nothing.
    let same = expect(
        patch(&app, &t, json!({"timezone": "Asia/Tokyo"})).await,
        200,
    )
    .await;
    assert_eq!(same["version"], 2);
    let read = expect(app.get("/settings", &t.token).send().await.unwrap(), 200).await;
    assert_eq!(read["version"], 2);

    let logs = expect(app.get("/audit-logs", &t.token).send().await.unwrap(), 200).await;
    let entry = |request_id: &str| {
        logs["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["request_id"] == request_id)
            .cloned()
            .unwrap_or_else(|| panic!("no audit entry {request_id} in {logs}"))
    };
    let settings = entry("settings-1");
    assert_eq!(settings["resource"], "settings");
    assert_eq!(settings["action"], "update");
    assert_eq!(settings["user_id"], t.admin_id.to_string());
    assert_eq!(settings["changes"]["before"]["timezone"], "UTC");
    assert_eq!(settings["changes"]["after"]["timezone"], "Asia/Tokyo");
    assert_eq!(settings["changes"]["version"], 1);
    let branding = entry("branding-1");
    assert_eq!(branding["resource"], "branding");
    assert_eq!(branding["changes"]["before"]["primary_color"], "#2563eb");
    assert_eq!(branding["changes"]["after"]["primary_color"], "#101010");
    assert_eq!(branding["changes"]["version"], 2);

    let db = app.superuser_db().await;
    let rows = db
        .query(
            "select version, change, previous, settings, user_id, request_id \
             from app.settings_versions where tenant_id = $1 order by version",
            &[&t.id],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].get::<_, i32>(0), 1);
    assert_eq!(rows[0].get::<_, String>(1), "settings");
    assert_eq!(rows[0].get::<_, Value>(2)["timezone"], "UTC");
    assert_eq!(rows[0].get::<_, Value>(3)["timezone"], "Asia/Tokyo");
    assert_eq!(rows[1].get::<_, String>(1), "branding");
    assert_eq!(
        rows[1].get::<_, Value>(3)["branding"]["accent_color"],
        "#202020"
    );
    assert_eq!(
        rows[1].get::<_, Option<String>>(5).as_deref(),
        Some("branding-1")
    );
    // Stored in the tenant row too, for the next snapshot load.
    let stored: Value = db
        .query_one("select settings from app.tenants where id = $1", &[&t.id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored["timezone"], "Asia/Tokyo");
    assert_eq!(stored["branding"]["primary_color"], "#101010");
}

#[tokio::test]
async fn a_tenant_never_reads_or_changes_anothers_settings() {
    let app = spawn_app().await;
    let a = app.create_tenant("iso-a").await;
    let b = app.create_tenant("iso-b").await;
    let host_a = format!("iso-a.{}:{}", app.config.base_domain, app.port);
    let a_before = expect(app.get("/settings", &a.token).send().await.unwrap(), 200).await;

    // B's token naming A by header or subdomain: refused.
    for (name, value) in [
        ("X-Tenant-ID", "iso-a".to_string()),
        ("X-Tenant-ID", a.id.to_string()),
        ("Host", host_a.clone()),
    ] {
        let r = app
            .get("/settings", &b.token)
            .header(name, value.as_str())
            .send()
            .await
            .unwrap();
        assert_problem(r, 403, "forbidden").await;
        let r = app
            .patch("/settings", &b.token)
            .header(name, value.as_str())
            .json(&json!({"locale": "fr"}))
            .send()
            .await
            .unwrap();
        assert_problem(r, 403, "forbidden").await;
        let r = app
            .http
            .put(app.url("/settings/branding"))
            .bearer_auth(&b.token)
            .header(name, value.as_str())
            .json(&json!({"logo_url": null, "primary_color": "#666666", "accent_color": "#666666"}))
            .send()
            .await
            .unwrap();
        assert_problem(r, 403, "forbidden").await;
    }
    // Naming A in the body: refused, not applied anywhere.
    for body in [
        json!({"tenant_id": a.id, "locale": "fr"}),
        json!({"tenant": "iso-a", "locale": "fr"}),
        json!({"branding": {"tenant_id": a.id, "primary_color": "#666666"}}),
    ] {
        assert_problem(patch(&app, &b, body).await, 422, "validation_failed").await;
    }
    // B changes its own settings: A's are untouched, and each tenant reads only its own.
    expect(
        patch(
            &app,
            &b,
            json!({"locale": "fr", "branding": {"primary_color": "#666666"}}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(
        expect(app.get("/settings", &a.token).send().await.unwrap(), 200).await,
        a_before
    );
    let b_now = expect(app.get("/settings", &b.token).send().await.unwrap(), 200).await;
    assert_eq!(b_now["locale"], "fr");
    assert_eq!(branding_of(&app, "iso-a").await["primary_color"], "#2563eb");
    assert_eq!(branding_of(&app, "iso-b").await["primary_color"], "#666666");
    // B's audit trail has B's change only; A's has none.
    let a_logs = expect(
        app.get("/audit-logs?resource=settings", &a.token)
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(a_logs["items"].as_array().unwrap().len(), 0);
}
