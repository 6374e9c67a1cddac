//! The document against validation. Values at and just past every bound that `flock-models`
//! and the routes' parsers enforce (taken from their constants), every kind of character, a
//! corpus of awkward URLs and secrets, and seeded random combinations of all of them: each is
//! judged by a JSON Schema validator (boon, format assertions on) against the document's own
//! schemas, and by the server's validation. They must agree, so a constraint the server
//! enforces that the document does not state, or the other way round, fails here with the value
//! that shows it.

use boon::{Compiler, Draft, SchemaIndex, Schemas, SchemeUrlLoader};
use flock_models::{
    ArtifactPublishRequest, BatchPublishRequest, MAX_BATCH_ARTIFACTS, MAX_HEADER_NAME_BYTES,
    MAX_HEADER_VALUE_BYTES, MAX_HEADERS, MAX_SECRET_CHARS, MAX_SYNC_TIMEOUT, MAX_URL_BYTES,
    MAX_WEBHOOKS, MIN_SYNC_TIMEOUT, SyncPublishRequest, Tags, TypeName,
};
use serde_json::{Map, Value, json};

use crate::idempotency;
use crate::routes::artifacts::{MAX_LIMIT, MAX_OFFSET, parse_query};

/// Where the document is registered for the validator; never fetched.
const LOCATION: &str = "urn:flock:openapi";
/// Random cases per request schema, from a fixed seed so a failure can be reproduced.
const RANDOM_CASES: usize = 4_000;
const SEED: u64 = 0x0f10_c0a9_1da7_e5ee;

/// The document's schemas, compiled.
struct Document {
    schemas: Schemas,
    publish: SchemaIndex,
    sync: SchemaIndex,
    batch: SchemaIndex,
    document: Value,
    compiler: Compiler,
}

impl Document {
    fn load() -> Self {
        let document = super::document();
        let mut compiler = Compiler::new();
        compiler.set_default_draft(Draft::V2020_12);
        compiler.enable_format_assertions();
        compiler.use_loader(Box::new(SchemeUrlLoader::new()));
        compiler
            .add_resource(LOCATION, document.clone())
            .expect("the document is JSON");
        let mut schemas = Schemas::new();
        let mut compile = |pointer: &str| {
            compiler
                .compile(&format!("{LOCATION}#{pointer}"), &mut schemas)
                .unwrap_or_else(|e| panic!("{pointer} is not a valid JSON Schema: {e:#}"))
        };
        let publish = compile("/components/schemas/PublishRequest");
        let sync = compile("/components/schemas/SyncPublishRequest");
        let batch = compile("/components/schemas/BatchPublishRequest");
        Document {
            schemas,
            publish,
            sync,
            batch,
            document,
            compiler,
        }
    }

    fn valid(&self, schema: SchemaIndex, value: &Value) -> bool {
        self.schemas.validate(value, schema).is_ok()
    }

    /// The schema of parameter `name` of `method path`, compiled.
    fn parameter(&mut self, path: &str, method: &str, name: &str) -> SchemaIndex {
        let parameters = self.document["paths"][path][method]["parameters"]
            .as_array()
            .unwrap_or_else(|| panic!("{method} {path} has no parameters"));
        let index = parameters
            .iter()
            .position(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{method} {path} documents no parameter `{name}`"));
        let escaped = path.replace('~', "~0").replace('/', "~1");
        let pointer = format!("/paths/{escaped}/{method}/parameters/{index}/schema");
        self.compiler
            .compile(&format!("{LOCATION}#{pointer}"), &mut self.schemas)
            .unwrap_or_else(|e| panic!("{pointer} is not a valid JSON Schema: {e:#}"))
    }
}

/// Characters of every kind: all of ASCII, the C1 controls' edges, spaces and marks that
/// look like nothing, letters outside ASCII of two, three and four bytes.
fn probe_chars() -> Vec<char> {
    let mut chars: Vec<char> = (0u8..=127).map(char::from).collect();
    chars.extend([
        '\u{80}',
        '\u{85}',
        '\u{9f}',
        '\u{a0}',
        '\u{ad}',
        'é',
        'ß',
        '\u{2028}',
        '\u{200b}',
        '\u{feff}',
        '€',
        '😀',
        '\u{10ffff}',
    ]);
    chars
}

/// Strings of `unit` repeated around `len`: one short, exactly, one past.
fn around(unit: &str, len: usize) -> Vec<String> {
    [len.saturating_sub(1), len, len + 1]
        .into_iter()
        .map(|n| unit.repeat(n))
        .collect()
}

/// Names, tags, secrets: each probe character alone and inside, and lengths around `max` in
/// characters of one, two and four bytes.
fn text_probes(max: usize) -> Vec<Value> {
    let mut values = vec![
        json!(""),
        json!("a"),
        json!(1),
        json!(true),
        json!([]),
        json!({}),
    ];
    for c in probe_chars() {
        values.push(json!(c.to_string()));
        values.push(json!(format!("a{c}b")));
    }
    for unit in ["a", "é", "😀"] {
        values.extend(around(unit, max).into_iter().map(Value::from));
    }
    values
}

fn type_names() -> Vec<Value> {
    let mut values = text_probes(TypeName::MAX_LEN);
    values.extend(["Idea", "my.type_name-2", "A.B-C_D"].map(Value::from));
    values
}

fn tag_lists() -> Vec<Value> {
    let mut values = vec![json!("x"), json!({}), json!([1]), json!([null]), json!([])];
    for tag in text_probes(Tags::MAX_LEN) {
        values.push(json!([tag]));
        values.push(json!(["fine", tag]));
    }
    for count in [Tags::MAX_COUNT - 1, Tags::MAX_COUNT, Tags::MAX_COUNT + 1] {
        let distinct: Vec<String> = (0..count).map(|i| format!("t{i}")).collect();
        values.push(json!(distinct));
        values.push(json!(vec!["same"; count]));
    }
    values
}

/// Webhook URLs: every part in its ordinary and awkward forms, alone and combined.
struct Urls {
    schemes: Vec<&'static str>,
    userinfo: Vec<&'static str>,
    hosts: Vec<&'static str>,
    ports: Vec<&'static str>,
    tails: Vec<String>,
}

impl Urls {
    fn new() -> Self {
        let mut tails: Vec<String> = [
            "",
            "/",
            "/hook",
            "/a/b?x=1#f",
            "/%41",
            "/%4",
            "/%zz",
            "/%",
            "/a b",
            "/{x}",
            "?q",
            "?q=/?",
            "#f#g",
            "/?#",
            "/a?b#c?d/e",
            "/~!$&'()*+,;=:@",
            "#",
            "?",
            "//",
            "/..",
            "/./a",
            "?a=%ZZ",
        ]
        .map(String::from)
        .to_vec();
        for c in probe_chars() {
            tails.push(format!("/a{c}b"));
            tails.push(format!("?a{c}b"));
        }
        Urls {
            schemes: vec![
                "http://",
                "https://",
                "HTTP://",
                "HtTpS://",
                "ftp://",
                "ws://",
                "http:/",
                "http:",
                "//",
                "",
                "http:\\\\",
                " http://",
                "http ://",
                "httpx://",
                "mailto:",
            ],
            userinfo: vec!["", "u@", "u:p@", "@", ":@", "u%40@"],
            hosts: vec![
                "example.com",
                "a",
                "localhost",
                "a.b.",
                "xn--bcher-kva.example",
                "_a.example",
                "-a.example",
                "a-.example",
                "1a.example",
                "a.1a",
                "a.1",
                "a.0x1",
                "1.2.3.4",
                "127.0.0.1",
                "255.255.255.255",
                "256.1.1.1",
                "1.2.3",
                "1.2.3.4.5",
                "01.2.3.4",
                "1.2.3.04",
                "0x7f.0.0.1",
                "a..b",
                ".a",
                "ex ample.com",
                "exämple.com",
                "a%41.com",
                "a~b.com",
                "a!b.com",
                "[::1]",
                "[::]",
                "[1:2:3:4:5:6:7:8]",
                "[1:2:3:4:5:6:7::]",
                "[::2:3:4:5:6:7:8]",
                "[1::2::3]",
                "[::ffff:1.2.3.4]",
                "[::ffff:1.2.3.04]",
                "[fe80::1%25eth0]",
                "[v1.x]",
                "[1:2:3:4:5:6:7:8:9]",
                "[12345::]",
                "[::1",
                "::1",
                "",
                "a:b",
            ],
            ports: vec![
                "", ":0", ":80", ":8080", ":65535", ":65536", ":99999", ":", ":0080", ":a", ":-1",
                ":1:2",
            ],
            tails,
        }
    }

    /// Each part varied alone around an ordinary URL, then the long ones.
    fn corpus(&self) -> Vec<String> {
        let mut urls = Vec::new();
        for scheme in &self.schemes {
            urls.push(format!("{scheme}example.com/hook"));
        }
        for userinfo in &self.userinfo {
            urls.push(format!("https://{userinfo}example.com/"));
        }
        for host in &self.hosts {
            urls.push(format!("http://{host}/"));
            urls.push(format!("https://{host}:8443/x?y#z"));
        }
        for port in &self.ports {
            urls.push(format!("http://example.com{port}/"));
            urls.push(format!("http://[::1]{port}"));
        }
        for tail in &self.tails {
            urls.push(format!("https://example.com{tail}"));
        }
        let head = "https://example.com/";
        for unit in ["a", "é", "%41"] {
            for n in around(unit, (MAX_URL_BYTES - head.len()) / unit.len()) {
                urls.push(format!("{head}{n}"));
            }
        }
        urls.extend(
            around("a", MAX_URL_BYTES - head.len())
                .into_iter()
                .map(|tail| format!("{head}{tail}")),
        );
        urls
    }

    /// A URL of random parts.
    fn random(&self, rng: &mut fastrand::Rng) -> String {
        let pick = |rng: &mut fastrand::Rng, list: &[&'static str]| list[rng.usize(..list.len())];
        // Mostly ordinary schemes and no user-info, so that the other parts decide.
        let scheme = if rng.bool() {
            pick(rng, &self.schemes[..4])
        } else {
            pick(rng, &self.schemes)
        };
        let userinfo = if rng.u8(..4) == 0 {
            pick(rng, &self.userinfo)
        } else {
            ""
        };
        let host = pick(rng, &self.hosts);
        let port = pick(rng, &self.ports);
        let tail = &self.tails[rng.usize(..self.tails.len())];
        format!("{scheme}{userinfo}{host}{port}{tail}")
    }
}

/// Secrets: the `whsec_` form with keys of every padding and stray bits, its near misses, and
/// lengths around the limit.
fn secrets(rng: &mut fastrand::Rng) -> Vec<Value> {
    let mut values = text_probes(MAX_SECRET_CHARS);
    values.extend(
        [
            "whsec_",
            "whsec_QQ==",
            "whsec_QR==",
            "whsec_QQ=",
            "whsec_QQ",
            "whsec_QUI=",
            "whsec_QUJ=",
            "whsec_QUJD",
            "whsec_QUJDRA==",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "whsec_!!",
            "whsec_ QQ==",
            "whsec_QQ==\n",
            "whsec_====",
            "whsec_Q===",
            "whsec",
            "whse",
            "whs",
            "wh",
            "w",
            "WHSEC_!!",
            "xwhsec_!!",
            "whsec_-_==",
        ]
        .map(Value::from),
    );
    let alphabet: Vec<char> =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_ "
            .chars()
            .collect();
    for _ in 0..400 {
        let len = rng.usize(1..=12);
        let key: String = (0..len)
            .map(|_| alphabet[rng.usize(..alphabet.len())])
            .collect();
        values.push(json!(format!("whsec_{key}")));
    }
    values
}

fn timeouts() -> Vec<Value> {
    let (min, max) = (
        MIN_SYNC_TIMEOUT.as_secs_f64(),
        MAX_SYNC_TIMEOUT.as_secs_f64(),
    );
    vec![
        json!(min),
        json!(min - 0.001),
        json!(min - 1.0),
        json!(max),
        json!(max + 0.001),
        json!(max + 1.0),
        json!(MIN_SYNC_TIMEOUT.as_secs()),
        json!(MAX_SYNC_TIMEOUT.as_secs()),
        json!(MAX_SYNC_TIMEOUT.as_secs() + 1),
        json!(0),
        json!(-5),
        json!(2.5),
        json!(1e300),
        json!("5"),
        json!(true),
        json!([]),
    ]
}

fn filters() -> Vec<Value> {
    let mut values = vec![
        json!({}),
        json!([]),
        json!("x"),
        json!({"type_names": null}),
        json!({"produced_by": null}),
        json!({"type_names": []}),
        json!({"type_names": "A"}),
        json!({"produced_by": ["external", "", "any thing\n"]}),
        json!({"produced_by": [1]}),
        json!({"produced_by": "external"}),
        json!({"other": 1}),
    ];
    for name in type_names() {
        values.push(json!({ "type_names": [name] }));
    }
    values
}

/// A body with the artifact's required fields.
fn base() -> Map<String, Value> {
    let mut body = Map::new();
    body.insert("type".to_owned(), json!("Idea"));
    body.insert("payload".to_owned(), json!({"k": 1}));
    body
}

fn with(field: &str, value: Value) -> Value {
    let mut body = base();
    body.insert(field.to_owned(), value);
    Value::Object(body)
}

/// The bodies both publish routes take: each field varied alone, the webhook forms combined.
fn publish_bodies(urls: &Urls, rng: &mut fastrand::Rng) -> Vec<Value> {
    let mut bodies = vec![
        json!(null),
        json!([]),
        json!("body"),
        Value::Object(base()),
        json!({"payload": {}}),
        json!({"type": "A"}),
        json!({"type": "A", "payload": null}),
        with("extra", json!(1)),
        with("", json!(1)),
        with("Type", json!("A")),
        with("timeout", json!(5)),
        with("filters", json!({})),
    ];
    for name in type_names() {
        bodies.push(with("type", name));
    }
    for payload in [json!({}), json!([]), json!("x"), json!(1), json!(null)] {
        bodies.push(with("payload", payload));
    }
    for tags in tag_lists() {
        bodies.push(with("tags", tags));
    }
    bodies.push(with("tags", json!(null)));
    let mut url_values: Vec<Value> = urls.corpus().into_iter().map(Value::from).collect();
    url_values.extend([json!(1), json!(null), json!([])]);
    for url in &url_values {
        bodies.push(with("webhook", json!({ "url": url })));
        bodies.push(with("webhook_url", url.clone()));
    }
    for secret in secrets(rng) {
        bodies.push(with(
            "webhook",
            json!({"url": "https://example.com/", "secret": secret}),
        ));
        let mut body = base();
        body.insert("webhook_url".to_owned(), json!("https://example.com/"));
        body.insert("webhook_secret".to_owned(), secret);
        bodies.push(Value::Object(body));
    }
    // A webhook's `types`: at and past its bounds, with valid and invalid names.
    let many = |n: usize| Value::from(vec![json!("Idea"); n]);
    let mut type_lists = vec![
        json!(null),
        json!([]),
        json!(["Idea"]),
        json!(["Idea", "Idea"]),
        json!("Idea"),
        json!([1]),
        many(flock_models::WebhookConfig::MAX_TYPES),
        many(flock_models::WebhookConfig::MAX_TYPES + 1),
    ];
    type_lists.extend(type_names().into_iter().map(|name| json!([name])));
    for types in type_lists {
        bodies.push(with(
            "webhook",
            json!({"url": "https://example.com/", "types": types}),
        ));
    }
    // A webhook's custom headers and `ordered`.
    for headers in header_maps(rng) {
        bodies.push(with(
            "webhook",
            json!({"url": "https://example.com/", "headers": headers}),
        ));
    }
    for ordered in [
        json!(true),
        json!(false),
        json!(null),
        json!("yes"),
        json!(1),
    ] {
        bodies.push(with(
            "webhook",
            json!({"url": "https://example.com/", "ordered": ordered}),
        ));
    }
    // Several webhooks: at and past the bound, with good and bad members, alone or beside the
    // other forms.
    let hook = json!({"url": "https://example.com/", "types": ["Idea"], "ordered": true});
    let hooks = |n: usize| Value::from(vec![hook.clone(); n]);
    let lists = [
        json!(null),
        json!([]),
        hooks(1),
        hooks(MAX_WEBHOOKS),
        hooks(MAX_WEBHOOKS + 1),
        json!({"url": "https://example.com/"}),
        json!([null]),
        json!([{"url": "https://example.com/", "extra": 1}]),
        json!([hook, {"url": "nope"}]),
        json!([{"url": "https://example.com/", "headers": {"Host": "x"}}]),
    ];
    for list in &lists {
        bodies.push(with("webhooks", list.clone()));
        for (field, value) in [
            ("webhook", json!({"url": "https://example.com/"})),
            ("webhook", json!(null)),
            ("webhook_url", json!("https://example.com/")),
            ("webhook_secret", json!("s")),
        ] {
            let mut body = base();
            body.insert("webhooks".to_owned(), list.clone());
            body.insert(field.to_owned(), value);
            bodies.push(Value::Object(body));
        }
    }
    // Every combination of the three webhook fields, each absent, null, valid or invalid.
    let nested = [
        None,
        Some(json!(null)),
        Some(json!({"url": "https://example.com/"})),
        Some(json!({"url": "https://example.com/", "secret": null})),
        Some(json!({"url": null})),
        Some(json!({"secret": "s"})),
        Some(json!({"url": "https://example.com/", "extra": 1})),
        Some(json!("https://example.com/")),
    ];
    let url = [
        None,
        Some(json!(null)),
        Some(json!("https://e.com/")),
        Some(json!("nope")),
        Some(json!(5)),
    ];
    let secret = [
        None,
        Some(json!(null)),
        Some(json!("s")),
        Some(json!("")),
        Some(json!(5)),
    ];
    for n in &nested {
        for u in &url {
            for s in &secret {
                let mut body = base();
                for (field, value) in [("webhook", n), ("webhook_url", u), ("webhook_secret", s)] {
                    if let Some(value) = value {
                        body.insert(field.to_owned(), value.clone());
                    }
                }
                bodies.push(Value::Object(body));
            }
        }
    }
    bodies
}

/// Header maps: names of every kind (tokens, refused names in any case, refused prefixes,
/// characters that are not token characters, at and past the length bound), values of every
/// kind (control characters, non-ASCII, at and past the length bound), at and past the count
/// bound, and things that are not maps.
fn header_maps(rng: &mut fastrand::Rng) -> Vec<Value> {
    let mut names: Vec<String> = [
        "Authorization",
        "X-Token",
        "x",
        "!#$%&'*+-.^_`|~09AZaz",
        "Host",
        "HOST",
        "hoSt",
        "Hosts",
        "Content-Length",
        "content-type",
        "Content-Types",
        "Transfer-Encoding",
        "connection",
        "User-Agent",
        "user-agents",
        "webhook-id",
        "Webhook-Anything",
        "webhook",
        "webhooks-x",
        "X-Flock-Signature",
        "x-flock-",
        "X-Flocking",
        "",
        "Bad Name",
        "a:b",
        "é",
        "a\tb",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    names.push("n".repeat(MAX_HEADER_NAME_BYTES));
    names.push("n".repeat(MAX_HEADER_NAME_BYTES + 1));
    let mut maps: Vec<Value> = names.iter().map(|name| json!({ name: "v" })).collect();
    let mut values: Vec<Value> = probe_chars()
        .into_iter()
        .map(|c| json!(format!("a{c}b")))
        .collect();
    values.extend([
        json!(""),
        json!("v".repeat(MAX_HEADER_VALUE_BYTES)),
        json!("v".repeat(MAX_HEADER_VALUE_BYTES + 1)),
        json!(1),
        json!(null),
        json!(["v"]),
    ]);
    maps.extend(values.into_iter().map(|value| json!({ "X-Token": value })));
    let count = |n: usize| -> Value {
        Value::Object((0..n).map(|i| (format!("X-H{i}"), json!("v"))).collect())
    };
    maps.extend([
        count(MAX_HEADERS),
        count(MAX_HEADERS + 1),
        json!({}),
        json!(null),
        json!([]),
        json!("X-Token: v"),
        json!({"X-A": "1", "x-a": "2"}),
    ]);
    // Random maps of a few names and values from the pools above.
    for _ in 0..200 {
        let mut map = Map::new();
        for _ in 0..rng.usize(1..4) {
            let name = names[rng.usize(..names.len())].clone();
            map.insert(name, json!("v"));
        }
        maps.push(Value::Object(map));
    }
    maps
}

/// A body of random fields, each drawn from its probes (or left out).
fn random_body(rng: &mut fastrand::Rng, urls: &Urls, pools: &[(&str, Vec<Value>)]) -> Value {
    let mut body = Map::new();
    for (field, pool) in pools {
        if rng.u8(..3) > 0 {
            body.insert((*field).to_owned(), pool[rng.usize(..pool.len())].clone());
        }
    }
    match rng.u8(..4) {
        0 => {
            body.insert("webhook".to_owned(), json!({ "url": urls.random(rng) }));
        }
        1 => {
            body.insert("webhook_url".to_owned(), json!(urls.random(rng)));
        }
        _ => {}
    }
    Value::Object(body)
}

fn disagreements<F: Fn(Value) -> Result<(), String>>(
    document: &Document,
    schema: SchemaIndex,
    bodies: impl IntoIterator<Item = Value>,
    server: F,
) -> Vec<String> {
    let mut found = Vec::new();
    let mut seen = 0;
    for body in bodies {
        seen += 1;
        let by_document = document.valid(schema, &body);
        let by_server = server(body.clone());
        if by_document != by_server.is_ok() {
            found.push(format!(
                "{body}\n  document: {}, server: {}",
                if by_document { "valid" } else { "invalid" },
                match &by_server {
                    Ok(()) => "accepts".to_owned(),
                    Err(e) => format!("refuses ({e})"),
                }
            ));
        }
    }
    assert!(seen > 1_000, "only {seen} cases were generated");
    found
}

fn report(found: &[String]) {
    assert!(
        found.is_empty(),
        "the document and validation disagree on {} values; the first ones:\n{}",
        found.len(),
        found
            .iter()
            .take(15)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn the_publish_schemas_accept_exactly_what_validation_accepts() {
    let document = Document::load();
    let urls = Urls::new();
    let mut rng = fastrand::Rng::with_seed(SEED);
    let bodies = publish_bodies(&urls, &mut rng);
    let pools: Vec<(&str, Vec<Value>)> = vec![
        ("type", type_names()),
        ("payload", vec![json!({}), json!({"a": [1]}), json!([])]),
        ("tags", tag_lists()),
        ("webhook_secret", secrets(&mut rng)),
        ("extra", vec![json!(1)]),
    ];
    let random: Vec<Value> = (0..RANDOM_CASES)
        .map(|_| random_body(&mut rng, &urls, &pools))
        .collect();

    let publish = |body: Value| {
        ArtifactPublishRequest::from_value(body)
            .map(drop)
            .map_err(|e| e.to_string())
    };
    let mut found = disagreements(
        &document,
        document.publish,
        bodies.iter().chain(&random).cloned(),
        publish,
    );

    let sync = |body: Value| {
        SyncPublishRequest::from_value(body)
            .map(drop)
            .map_err(|e| e.to_string())
    };
    let mut sync_bodies = bodies.clone();
    for timeout in timeouts() {
        sync_bodies.push(with("timeout", timeout));
    }
    for filter in filters() {
        sync_bodies.push(with("filters", filter));
    }
    let mut sync_pools = pools;
    sync_pools.push(("timeout", timeouts()));
    sync_pools.push(("filters", filters()));
    sync_bodies.extend((0..RANDOM_CASES).map(|_| random_body(&mut rng, &urls, &sync_pools)));
    found.extend(disagreements(&document, document.sync, sync_bodies, sync));

    // A batch takes the same webhook fields: each publish body's artifact fields become one
    // artifact of a batch, and the batch's own bounds are tried.
    let batch = |body: Value| {
        BatchPublishRequest::from_value(body)
            .map(drop)
            .map_err(|e| e.to_string())
    };
    let mut batch_bodies: Vec<Value> = bodies
        .iter()
        .chain(&random)
        .map(|body| match body {
            Value::Object(fields) => {
                let mut artifact = Map::new();
                let mut rest = Map::new();
                for (name, value) in fields {
                    match name.as_str() {
                        "type" | "payload" | "tags" | "extra" => {
                            artifact.insert(name.clone(), value.clone())
                        }
                        _ => rest.insert(name.clone(), value.clone()),
                    };
                }
                rest.insert("artifacts".to_owned(), json!([artifact]));
                Value::Object(rest)
            }
            other => other.clone(),
        })
        .collect();
    let artifact = json!({"type": "Idea", "payload": {}});
    for artifacts in [
        json!(null),
        json!([]),
        json!({}),
        json!([null]),
        json!([artifact, {"type": "Idea"}]),
        json!([artifact, {"type": "Idea", "payload": {}, "webhook_url": "https://e.com/"}]),
        Value::from(vec![artifact.clone(); MAX_BATCH_ARTIFACTS]),
        Value::from(vec![artifact.clone(); MAX_BATCH_ARTIFACTS + 1]),
    ] {
        batch_bodies.push(json!({ "artifacts": artifacts }));
    }
    batch_bodies.push(json!({"artifacts": [artifact], "timeout": 5}));
    found.extend(disagreements(
        &document,
        document.batch,
        batch_bodies,
        batch,
    ));
    report(&found);
}

/// How a client writes an integer parameter: in decimal; anything else stays text (which an
/// `integer` schema refuses).
fn query_value(text: &str) -> Value {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let canonical = (text == "0")
        || (digits.starts_with(|c: char| ('1'..='9').contains(&c))
            && digits.bytes().all(|b| b.is_ascii_digit()));
    if canonical && let Ok(n) = serde_json::from_str::<serde_json::Number>(text) {
        return Value::Number(n);
    }
    Value::String(text.to_owned())
}

/// `text` percent-encoded for a query string.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[test]
fn the_list_parameters_accept_exactly_what_the_query_parser_accepts() {
    let mut document = Document::load();
    let path = "/api/v1/artifacts";
    let names = [
        "type",
        "produced_by",
        "correlation_id",
        "tag",
        "from",
        "to",
        "limit",
        "offset",
        "cursor",
        "order",
    ];
    let schemas: Vec<SchemaIndex> = names
        .iter()
        .map(|name| document.parameter(path, "get", name))
        .collect();
    let type_items = {
        let parameters = document.document["paths"][path]["get"]["parameters"]
            .as_array()
            .expect("parameters")
            .clone();
        let index = parameters
            .iter()
            .position(|p| p["name"] == "type")
            .expect("type");
        document
            .compiler
            .compile(
                &format!(
                    "{LOCATION}#/paths/~1api~1v1~1artifacts/get/parameters/{index}/schema/items"
                ),
                &mut document.schemas,
            )
            .expect("the type items compile")
    };
    assert_eq!(
        document.document["paths"][path]["get"]["parameters"][0]["explode"],
        true
    );

    let mut types: Vec<String> = ["", ",", ",,A,,B,", "A,B", "A,,", " A", "A B", "A;B"]
        .map(String::from)
        .to_vec();
    for name in type_names()
        .into_iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
    {
        types.push(name.clone());
        types.push(format!("Idea,{name}"));
    }
    let uuid = uuid::Uuid::now_v7();
    let ids = vec![
        uuid.hyphenated().to_string(),
        uuid.hyphenated().to_string().to_uppercase(),
        uuid.simple().to_string(),
        uuid.braced().to_string(),
        uuid.urn().to_string(),
        uuid.hyphenated().to_string()[1..].to_owned(),
        format!("{}0", uuid.hyphenated()),
        "g".repeat(8) + &uuid.hyphenated().to_string()[8..],
        String::new(),
        "x".to_owned(),
    ];
    let times: Vec<String> = [
        "2026-11-28T12:00:00Z",
        "2026-11-28T12:00:00.123456Z",
        "2026-11-28T12:00:00.1234567891Z",
        "2026-11-28T12:00:00+01:00",
        "2026-11-28T12:00:00-00:00",
        "2026-11-28t12:00:00z",
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
        "2024-02-29T00:00:00Z",
        "2026-02-29T00:00:00Z",
        "2026-11-28 12:00:00Z",
        "2026-11-28T12:00Z",
        "2026-11-28T12:00:00",
        "2026-11-28T12:00:00+24:00",
        "2026-11-28T12:00:00+23:59",
        "2026-11-28T24:00:00Z",
        "2026-13-01T00:00:00Z",
        "2026-11-28T12:00:00.Z",
        "2026-11-28T12:00:00,5Z",
        "+2026-11-28T12:00:00Z",
        "2026-11-28",
        "yesterday",
        "",
    ]
    .map(String::from)
    .to_vec();
    let numbers = |max: usize| -> Vec<String> {
        let mut values: Vec<String> = ["0", "1", "2", "-1", "1.5", "abc", "", "true", "1 "]
            .map(String::from)
            .to_vec();
        values.extend([max - 1, max].map(|n| n.to_string()));
        values.push((u128::from(max as u64) + 1).to_string());
        values
    };
    let mut free: Vec<String> = probe_chars().into_iter().map(String::from).collect();
    free.extend(["", "external", "a b"].map(String::from));
    let pools: Vec<Vec<String>> = vec![
        types,
        free.clone(),
        ids,
        free,
        times.clone(),
        times,
        numbers(MAX_LIMIT),
        numbers(MAX_OFFSET),
        [
            "0",
            "7",
            "",
            "-1",
            "1.5",
            "a",
            "01",
            "9999999999999999999",
            "18446744073709551615",
            " 1",
        ]
        .map(String::from)
        .to_vec(),
        [
            "oldest_first",
            "newest_first",
            "",
            "desc",
            "NEWEST_FIRST",
            "newest_first ",
        ]
        .map(String::from)
        .to_vec(),
    ];

    let judge = |document: &Document, pairs: &[(usize, &String)]| -> bool {
        pairs.iter().all(|(i, value)| match names[*i] {
            "type" => document.valid(type_items, &json!(value)),
            "limit" | "offset" => document.valid(schemas[*i], &query_value(value)),
            _ => document.valid(schemas[*i], &json!(value)),
        })
    };
    let mut queries: Vec<Vec<(usize, &String)>> = Vec::new();
    for (i, pool) in pools.iter().enumerate() {
        for value in pool {
            queries.push(vec![(i, value)]);
        }
    }
    let mut rng = fastrand::Rng::with_seed(SEED);
    for _ in 0..RANDOM_CASES {
        let mut pairs = Vec::new();
        for (i, pool) in pools.iter().enumerate() {
            let repeats = if names[i] == "type" {
                rng.usize(0..3)
            } else {
                rng.usize(0..2)
            };
            for _ in 0..repeats {
                pairs.push((i, &pool[rng.usize(..pool.len())]));
            }
        }
        queries.push(pairs);
    }
    let mut found = Vec::new();
    for pairs in &queries {
        let text = pairs
            .iter()
            .map(|(i, value)| format!("{}={}", names[*i], encode(value)))
            .collect::<Vec<_>>()
            .join("&");
        let by_document = judge(&document, pairs);
        let by_server = parse_query(&text);
        if by_document != by_server.is_ok() {
            found.push(format!(
                "?{text}\n  document: {by_document}, server: {:?}",
                by_server.map(drop)
            ));
        }
    }
    assert!(queries.len() > RANDOM_CASES);
    report(&found);
}

#[test]
fn the_idempotency_key_is_documented_as_checked() {
    let mut document = Document::load();
    let schema = document.parameter("/api/v1/artifacts", "post", "X-Idempotency-Key");
    let sync = document.parameter("/api/v1/artifacts/sync", "post", "X-Idempotency-Key");
    let mut keys: Vec<String> = probe_chars().into_iter().map(String::from).collect();
    keys.extend(around("k", idempotency::MAX_KEY_LEN));
    keys.extend(around("é", idempotency::MAX_KEY_LEN));
    keys.push(String::new());
    keys.push("a b".to_owned());
    let mut found = Vec::new();
    for key in &keys {
        let by_server = idempotency::check_key(key).is_ok();
        for index in [schema, sync] {
            if document.valid(index, &json!(key)) != by_server {
                found.push(format!("{key:?}: server {by_server}"));
            }
        }
    }
    report(&found);
}

/// The schema at `pointer` inside the response body described by `schema`, following `$ref`s,
/// `properties` and array `items` (a numeric segment).
fn schema_at<'d>(document: &'d Value, mut schema: &'d Value, pointer: &str) -> Option<&'d Value> {
    let resolve = |mut schema: &'d Value| {
        while let Some(reference) = schema["$ref"].as_str() {
            schema = document.pointer(reference.strip_prefix('#')?)?;
        }
        Some(schema)
    };
    for segment in pointer.split('/').skip(1) {
        schema = resolve(schema)?;
        schema = if segment.parse::<usize>().is_ok() {
            schema.get("items")?
        } else {
            schema.get("properties")?.get(segment)?
        };
    }
    resolve(schema)
}

#[test]
fn links_name_real_operations_their_parameters_and_answer_fields() {
    let document = super::document();
    let mut operations = std::collections::BTreeMap::new();
    for (path, methods) in document["paths"].as_object().expect("paths") {
        for (method, operation) in methods.as_object().expect("operations") {
            let id = operation["operationId"]
                .as_str()
                .expect("every operation has an id");
            let previous =
                operations.insert(id.to_owned(), (path.clone(), method.clone(), operation));
            assert!(previous.is_none(), "two operations have the id `{id}`");
        }
    }
    let mut links = 0;
    for (from, (path, method, operation)) in &operations {
        for (status, response) in operation["responses"].as_object().expect("responses") {
            let Some(response_links) = response["links"].as_object() else {
                continue;
            };
            let body = &response["content"]["application/json"]["schema"];
            for (name, link) in response_links {
                links += 1;
                let at = format!("{method} {path} {status} link `{name}`");
                assert!(link.get("operation_id").is_none(), "{at}: {link}");
                let target = link["operationId"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{at}: {link}"));
                let (_, _, target_operation) = operations
                    .get(target)
                    .unwrap_or_else(|| panic!("{at} names no operation: `{target}`"));
                let path_parameters: Vec<&str> = target_operation["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["in"] == "path")
                    .filter_map(|p| p["name"].as_str())
                    .collect();
                let given = link["parameters"].as_object().expect("link parameters");
                let mut given_names: Vec<&str> = given.keys().map(String::as_str).collect();
                given_names.sort_unstable();
                assert_eq!(given_names, path_parameters, "{at} (from `{from}`)");
                for expression in given.values() {
                    let pointer = expression
                        .as_str()
                        .and_then(|e| e.strip_prefix("$response.body#"))
                        .unwrap_or_else(|| panic!("{at}: {expression}"));
                    let field = schema_at(&document, body, pointer)
                        .unwrap_or_else(|| panic!("{at}: the answer has no {pointer}"));
                    assert_eq!(
                        field["format"], "uuid",
                        "{at}: {pointer} is not an id: {field}"
                    );
                }
            }
        }
    }
    assert!(links >= 8, "only {links} links");
}
