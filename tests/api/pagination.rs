//! One pagination for every list of API.md: each list pages to its end with no row twice and
//! none left out, checks `limit` the same way, refuses an edited cursor and a cursor of another
//! list, and treats a cursor replayed by another tenant as a position only.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::fixtures::{create_project, create_task, create_user, expect, id_of};
use crate::helpers::{assert_problem, spawn_app, TestApp, TestTenant, OPERATOR_TOKEN};

/// Who reads a list.
#[derive(Clone, Copy)]
enum Reader<'a> {
    Tenant(&'a TestTenant),
    Operator,
}

struct List<'a> {
    path: String,
    reader: Reader<'a>,
}

impl List<'_> {
    fn url(&self, query: &str) -> String {
        let sep = if self.path.contains('?') { '&' } else { '?' };
        if query.is_empty() {
            self.path.clone()
        } else {
            format!("{}{sep}{query}", self.path)
        }
    }

    async fn get(&self, app: &TestApp, query: &str) -> reqwest::Response {
        let request = app.http.get(app.url(&self.url(query)));
        let request = match self.reader {
            Reader::Tenant(t) => request.bearer_auth(&t.token),
            Reader::Operator => request.bearer_auth(OPERATOR_TOKEN),
        };
        request.send().await.unwrap()
    }

    async fn page(&self, app: &TestApp, query: &str) -> Value {
        expect(self.get(app, query).await, 200).await
    }

    /// Every item, in one page.
    async fn all(&self, app: &TestApp) -> Vec<Value> {
        let page = self.page(app, "limit=500").await;
        assert!(
            page["next_cursor"].is_null(),
            "{}: one page holds all",
            self.path
        );
        page["items"].as_array().unwrap().clone()
    }

    /// The cursor after the first item.
    async fn first_cursor(&self, app: &TestApp) -> String {
        let page = self.page(app, "limit=1").await;
        page["next_cursor"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: a second page", self.path))
            .to_string()
    }
}

fn field_of(problem: &Value) -> String {
    problem["errors"][0]["field"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// Pages of `size` chained through `next_cursor` give exactly the whole list, in its order.
async fn pages_chain_to_the_end(app: &TestApp, list: &List<'_>, size: usize) {
    let all = list.all(app).await;
    assert!(
        all.len() > size,
        "{}: {} items do not make two pages of {size}",
        list.path,
        all.len()
    );
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let query = match &cursor {
            None => format!("limit={size}"),
            Some(c) => format!("limit={size}&cursor={c}"),
        };
        let page = list.page(app, &query).await;
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= size, "{}: page over its limit", list.path);
        paged.extend(items.iter().cloned());
        pages += 1;
        assert!(
            pages <= all.len(),
            "{}: the cursor does not advance",
            list.path
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(paged, all, "{}: no duplicates, no gaps", list.path);
    assert_eq!(pages, all.len().div_ceil(size), "{}: page count", list.path);
}

async fn limits_are_checked(app: &TestApp, list: &List<'_>) {
    for bad in ["limit=0", "limit=501", "limit=-1"] {
        let body = assert_problem(list.get(app, bad).await, 422, "validation_failed").await;
        assert_eq!(field_of(&body), "limit", "{} {bad}: {body}", list.path);
    }
    assert_problem(list.get(app, "limit=x").await, 422, "validation_failed").await;
    let page = list.page(app, "limit=500").await;
    assert!(page["items"].is_array());
}

/// Flips one character of a cursor: the result still looks like a cursor.
fn edited(cursor: &str, at: usize) -> String {
    cursor
        .char_indices()
        .map(|(i, c)| match (i == at, c) {
            (false, c) => c,
            (true, 'A') => 'B',
            (true, _) => 'A',
        })
        .collect()
}

async fn refused(app: &TestApp, list: &List<'_>, cursor: &str) {
    let body = assert_problem(
        list.get(app, &format!("cursor={cursor}")).await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(field_of(&body), "cursor", "{}: {body}", list.path);
}

async fn edited_cursors_are_refused(app: &TestApp, list: &List<'_>) {
    let cursor = list.first_cursor(app).await;
    for at in [0, cursor.len() / 2, cursor.len() - 1] {
        refused(app, list, &edited(&cursor, at)).await;
    }
    // The format of the cursors before they were sealed, pointing before PostgreSQL's range
    // (once a 500): refused like any other edit, never decoded.
    let old = URL_SAFE_NO_PAD.encode(format!("v1.-300000000000000000.{}", Uuid::nil().simple()));
    refused(app, list, &old).await;
    refused(app, list, "not-a-cursor").await;
}

async fn create_api_key(app: &TestApp, t: &TestTenant, name: &str) -> Value {
    let r = app
        .post("/api-keys", &t.token)
        .json(&json!({"name": name}))
        .send()
        .await
        .unwrap();
    expect(r, 201).await
}

/// Every list of a tenant; the members are those of `project`.
fn tenant_lists(t: &TestTenant, project: Uuid) -> [List<'_>; 8] {
    [
        "/users".to_string(),
        "/projects".to_string(),
        format!("/projects/{project}/members"),
        "/tasks".to_string(),
        format!("/tasks?project_id={project}"),
        "/audit-logs".to_string(),
        "/audit-logs?resource=task".to_string(),
        "/api-keys".to_string(),
    ]
    .map(|path| List {
        path,
        reader: Reader::Tenant(t),
    })
}

#[tokio::test]
async fn every_list_pages_the_same_way() {
    let app = spawn_app().await;
    let a = app.create_tenant_on_plan("alpha", "pro").await;
    let b = app.create_tenant_on_plan("beta", "pro").await;
    app.create_tenant("gamma").await;

    // Each tenant gets enough rows for several pages of 2 in every list.
    let mut projects = Vec::new();
    for (t, n) in [(&a, 3), (&b, 2)] {
        let mut users = Vec::new();
        for i in 0..n {
            let email = format!("user{i}@{}.example.com", t.slug);
            users.push(id_of(&create_user(&app, &t.token, &email, "member").await));
        }
        let project = id_of(&create_project(&app, &t.token, "Launch").await);
        create_project(&app, &t.token, "Other").await;
        create_project(&app, &t.token, "Third").await;
        for user in users.iter().chain([&t.admin_id]) {
            let r = app
                .post(&format!("/projects/{project}/members"), &t.token)
                .json(&json!({"user_id": user}))
                .send()
                .await
                .unwrap();
            expect(r, 201).await;
        }
        for i in 0..n + 2 {
            create_task(&app, &t.token, project, &format!("task {i}")).await;
        }
        for i in 0..3 {
            create_api_key(&app, t, &format!("key {i}")).await;
        }
        projects.push(project);
    }

    let operator_lists = [
        "/admin/tenants".to_string(),
        "/admin/tenants?include_deleted=true".to_string(),
        "/admin/tasks".to_string(),
        format!("/admin/tasks?tenant_id={}", a.id),
    ]
    .map(|path| List {
        path,
        reader: Reader::Operator,
    });
    let a_lists = tenant_lists(&a, projects[0]);
    let b_lists = tenant_lists(&b, projects[1]);
    let every_list: Vec<&List> = a_lists
        .iter()
        .chain(&b_lists)
        .chain(&operator_lists)
        .collect();

    for list in &every_list {
        pages_chain_to_the_end(&app, list, 2).await;
        pages_chain_to_the_end(&app, list, 1).await;
        limits_are_checked(&app, list).await;
        edited_cursors_are_refused(&app, list).await;
    }

    // A cursor of one list is refused by every other list, tenant or operator.
    for from in &every_list {
        let cursor = from.first_cursor(&app).await;
        for to in &every_list {
            let same_list = to.path.split('?').next() == from.path.split('?').next()
                || (to.path.contains("/members") && from.path.contains("/members"));
            if !same_list {
                refused(&app, to, &cursor).await;
            }
        }
    }

    // A cursor of tenant A used by tenant B is a position at most: B's page holds B's rows
    // only, as B's own list has them.
    for (of_a, of_b) in a_lists.iter().zip(&b_lists) {
        if of_a.path.contains("/members") {
            continue;
        }
        let cursor = of_a.first_cursor(&app).await;
        let b_rows = of_b.all(&app).await;
        let a_rows = of_a.all(&app).await;
        let page = of_b.page(&app, &format!("cursor={cursor}")).await;
        for item in page["items"].as_array().unwrap() {
            assert!(b_rows.contains(item), "{}: {item} is not B's", of_b.path);
            assert!(!a_rows.contains(item), "{}: {item} is A's", of_b.path);
        }
    }
    // Members: A's cursor on B's project.
    let cursor = a_lists[2].first_cursor(&app).await;
    let page = b_lists[2].page(&app, &format!("cursor={cursor}")).await;
    let b_members = b_lists[2].all(&app).await;
    for item in page["items"].as_array().unwrap() {
        assert!(
            b_members.contains(item),
            "{item} is not a member of B's project"
        );
    }
    // And on A's own project from B: not found, whatever the cursor.
    let r = app
        .get(
            &format!("/projects/{}/members?cursor={cursor}", projects[0]),
            &b.token,
        )
        .send()
        .await
        .unwrap();
    assert_problem(r, 404, "not_found").await;
}

/// The keyset is stable: rows written while a client pages never shift a page boundary.
#[tokio::test]
async fn rows_written_meanwhile_do_not_shift_the_pages() {
    let app = spawn_app().await;
    let t = app.create_tenant_on_plan("acme", "pro").await;
    for i in 0..3 {
        create_api_key(&app, &t, &format!("key {i}")).await;
    }
    let list = List {
        path: "/api-keys".into(),
        reader: Reader::Tenant(&t),
    };
    let first = list.page(&app, "limit=2").await;
    let cursor = first["next_cursor"].as_str().unwrap().to_string();
    let late = create_api_key(&app, &t, "late").await;
    let rest = list.page(&app, &format!("limit=2&cursor={cursor}")).await;
    let names: Vec<&str> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(rest["items"].as_array().unwrap())
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["key 0", "key 1", "key 2", "late"]);
    assert_eq!(rest["items"][1]["id"], late["id"]);
    assert!(rest["next_cursor"].is_null());
}
