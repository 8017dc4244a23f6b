//! Loading the config: defaults, precedence, the file's keys and what is refused.

use std::ffi::OsStr;
use std::fmt::Debug;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser};

use super::*;

fn cli(args: &[&str]) -> Cli {
    Cli::parse_from(std::iter::once("carrot-gateway").chain(args.iter().copied()))
}

/// Parses `args` as if the process environment also held `env`.
///
/// This process's variables cannot be set here (`set_var` is unsafe, and the crate forbids
/// unsafe code), so each variable is handed to clap as its argument's default instead. For the
/// precedence that is the same thing: clap puts either under a flag, and the file only fills
/// what neither gave. The variable names are the ones the arguments declare.
fn cli_with_env(args: &[&str], env: &[(&str, &'static str)]) -> Cli {
    let command = Cli::command().mut_args(|arg| {
        let given = arg.get_env().and_then(|name| {
            env.iter()
                .find(|(variable, _)| name == OsStr::new(variable))
        });
        match given {
            Some((_, value)) => arg.default_value(*value),
            None => arg,
        }
    });
    let matches = command
        .try_get_matches_from(std::iter::once("carrot-gateway").chain(args.iter().copied()))
        .expect("the arguments parse");
    Cli::from_arg_matches(&matches).expect("the matches fit the Cli")
}

fn load(args: &[&str]) -> Result<Config, String> {
    Config::load(&cli(args)).map_err(|error| error.to_string())
}

/// Loads `text` as the config file, with `args` after `--config`.
fn load_file(text: &str, args: &[&str]) -> Result<Config, String> {
    let file = TempPath::with(text);
    let path = file.0.to_str().expect("utf-8 temp path");
    load(&[&["--config", path], args].concat())
}

/// A file removed on drop, enough for these tests without another dependency.
struct TempPath(std::path::PathBuf);

impl TempPath {
    fn with(text: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "carrot-config-{}.yaml",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::write(&path, text).expect("temp dir is writable");
        Self(path)
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn defaults_match_the_contract() {
    let config = load(&[]).expect("defaults are valid");
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(config.server.shutdown_grace, Duration::from_secs(25));
    assert_eq!(config.server.log_format, LogFormat::Text);
    assert!(config.server.tls.is_none());
    assert_eq!(
        config.broker.amqp_url.0,
        ["amqp://guest:guest@127.0.0.1:5672/%2f"]
    );
    assert_eq!(config.broker.amqp_connections, 2);
    assert_eq!(config.broker.channel_pool_size, 256);
    assert_eq!(config.broker.broker_timeout, Duration::from_secs(10));
    let limits = config.consume.limits();
    assert_eq!(limits.lease_default, Duration::from_secs(30));
    assert_eq!(limits.lease_max, Duration::from_secs(900));
    assert_eq!(limits.wait_max, Duration::from_secs(20));
    assert_eq!(config.consume.consumer_idle, Duration::from_secs(300));
    let request = config.http.request_limits();
    assert_eq!(request.max_body_bytes, 8 * 1024 * 1024);
    assert_eq!(
        (request.max_headers, request.max_header_bytes),
        (100, 32 * 1024)
    );
    assert_eq!(request.body_timeout, Duration::from_secs(60));
    let connection = config.http.connection_limits();
    assert_eq!(connection.header_timeout, Duration::from_secs(10));
    assert_eq!(connection.idle_timeout, Duration::from_secs(60));
    assert_eq!(
        connection.max_connections,
        crate::net::default_max_connections()
    );
    assert!(!config.auth.allow_anonymous && !config.auth.tokens.has_tokens());
}

#[test]
fn the_help_lists_every_flag_with_its_default() {
    Cli::command().debug_assert();
    let help = Cli::command().render_long_help().to_string();
    // Each argument's entry runs from its line of flags to the next one.
    let mut entries: Vec<String> = Vec::new();
    for line in help.lines() {
        if line.trim_start().starts_with('-') {
            entries.push(String::new());
        }
        if let Some(entry) = entries.last_mut() {
            entry.push_str(line);
        }
    }
    for (flag, default) in [
        ("--listen", Some("127.0.0.1:8080")),
        ("--shutdown-grace", Some("25s")),
        ("--log-format", Some("text")),
        ("--tls-cert", None),
        ("--tls-key", None),
        ("--amqp-url", Some("amqp://guest:guest@127.0.0.1:5672/%2f")),
        ("--amqp-connections", Some("2")),
        ("--channel-pool-size", Some("256")),
        ("--broker-timeout", Some("10s")),
        ("--amqp-ca-file", None),
        ("--amqp-client-cert", None),
        ("--amqp-client-key", None),
        ("--lease-default", Some("30s")),
        ("--lease-max", Some("15m")),
        ("--wait-max", Some("20s")),
        ("--consumer-idle", Some("5m")),
        ("--max-body-bytes", Some("8388608")),
        ("--http-header-timeout", Some("10s")),
        ("--http-idle-timeout", Some("60s")),
        ("--http-body-timeout", Some("60s")),
        (
            "--max-connections",
            Some("the open-files limit less 128, at most 25000"),
        ),
        ("--max-headers", Some("100")),
        ("--max-header-bytes", Some("32768")),
        ("--allow-anonymous", Some("false")),
    ] {
        let line = entries
            .iter()
            .find(|entry| entry.trim_start().starts_with(&format!("{flag} ")))
            .unwrap_or_else(|| panic!("{flag} is missing from the help:\n{help}"));
        if let Some(default) = default {
            assert!(
                line.contains(&format!("[default: {default}]")),
                "{flag} lacks its default: {line}"
            );
        }
    }
}

/// One setting of a section: the flag wins over the variable, the variable over the file, the
/// file over the default. `want` is what each of those four layers gives.
fn precedence<T: PartialEq + Debug>(
    flag: &[&str],
    variable: (&str, &'static str),
    file: &str,
    read: impl Fn(&Config) -> T,
    want: [T; 4],
) {
    let file = TempPath::with(file);
    let path = file.0.to_str().expect("utf-8 temp path");
    let with_file = ["--config", path];
    let loaded = |args: &[&str], env: &[(&str, &'static str)]| {
        let config = Config::load(&cli_with_env(args, env)).expect("a valid config");
        read(&config)
    };
    let [from_flag, from_variable, from_file, default] = want;
    assert_eq!(
        loaded(&[&with_file[..], flag].concat(), &[variable]),
        from_flag,
        "the flag wins"
    );
    assert_eq!(
        loaded(&with_file, &[variable]),
        from_variable,
        "then the variable"
    );
    assert_eq!(loaded(&with_file, &[]), from_file, "then the file");
    assert_eq!(loaded(&[], &[]), default, "then the default");
}

fn secs(seconds: u64) -> Duration {
    Duration::from_secs(seconds)
}

#[test]
fn server_settings_take_flag_then_variable_then_file_then_default() {
    precedence(
        &["--listen", "127.0.0.1:9003"],
        ("CARROT_LISTEN", "127.0.0.1:9002"),
        "listen: 127.0.0.1:9001\n",
        |config| config.server.listen.port(),
        [9003, 9002, 9001, 8080],
    );
    precedence(
        &["--shutdown-grace", "1m"],
        ("CARROT_SHUTDOWN_GRACE", "45"),
        "shutdown_grace: 30s\n",
        |config| config.server.shutdown_grace,
        [secs(60), secs(45), secs(30), secs(25)],
    );
    precedence(
        &["--log-format", "json"],
        ("CARROT_LOG_FORMAT", "text"),
        "log_format: json\n",
        |config| config.server.log_format,
        [
            LogFormat::Json,
            LogFormat::Text,
            LogFormat::Json,
            LogFormat::Text,
        ],
    );
}

#[test]
fn broker_settings_take_flag_then_variable_then_file_then_default() {
    precedence(
        &["--broker-timeout", "3"],
        ("CARROT_BROKER_TIMEOUT", "2m"),
        "broker_timeout: 1h\n",
        |config| config.broker.settings().timeout,
        [secs(3), secs(120), secs(3600), secs(10)],
    );
    precedence(
        &["--amqp-url", "amqp://flag/%2f"],
        ("CARROT_AMQP_URL", "amqp://variable/%2f"),
        "amqp_url: amqp://file/%2f\n",
        |config| config.broker.settings().urls.join(" "),
        [
            "amqp://flag/%2f",
            "amqp://variable/%2f",
            "amqp://file/%2f",
            "amqp://guest:guest@127.0.0.1:5672/%2f",
        ]
        .map(String::from),
    );
}

#[test]
fn consume_settings_take_flag_then_variable_then_file_then_default() {
    precedence(
        &["--lease-max", "1h"],
        ("CARROT_LEASE_MAX", "600"),
        "lease_max: 20m\n",
        |config| config.consume.limits().lease_max,
        [secs(3600), secs(600), secs(1200), secs(900)],
    );
}

#[test]
fn http_settings_take_flag_then_variable_then_file_then_default() {
    precedence(
        &["--http-header-timeout", "3s"],
        ("CARROT_HTTP_HEADER_TIMEOUT", "2"),
        "http:\n  header_timeout: 1m\n",
        |config| config.http.connection_limits().header_timeout,
        [secs(3), secs(2), secs(60), secs(10)],
    );
    precedence(
        &["--max-body-bytes", "3000"],
        ("CARROT_MAX_BODY_BYTES", "2000"),
        "max_body_bytes: 1000\n",
        |config| config.http.request_limits().max_body_bytes,
        [3000, 2000, 1000, 8 * 1024 * 1024],
    );
}

#[test]
fn auth_settings_take_flag_then_variable_then_file_then_default() {
    precedence(
        &["--allow-anonymous"],
        ("CARROT_ALLOW_ANONYMOUS", "false"),
        "auth:\n  allow_anonymous: true\n",
        |config| config.auth.allow_anonymous,
        [true, false, true, false],
    );
}

#[test]
fn durations_take_units_or_seconds_everywhere() {
    for text in [
        "lease_max: 900\n",
        "lease_max: 15m\n",
        "lease_max: \"900\"\n",
    ] {
        let config = load_file(text, &[]).expect(text);
        assert_eq!(config.consume.lease_max, secs(900), "{text}");
    }
    for value in ["900", "15m", "900s"] {
        let config = load(&["--lease-max", value]).expect(value);
        assert_eq!(config.consume.lease_max, secs(900), "{value}");
    }
    let error = Cli::try_parse_from(["carrot-gateway", "--lease-max", "soon"])
        .expect_err("refused")
        .to_string();
    assert!(
        error.contains("--lease-max") && error.contains("15m"),
        "{error}"
    );
    let error = load_file("http:\n  body_timeout: soon\n", &[]).expect_err("refused");
    assert!(error.contains("http.body_timeout"), "{error}");
}

#[test]
fn flags_win_over_the_file() {
    let config = load_file(
        "listen: 127.0.0.1:9000\nmax_body_bytes: 1024\n",
        &["--listen", "127.0.0.1:9001"],
    )
    .expect("valid config");
    assert_eq!(config.server.listen.port(), 9001);
    assert_eq!(config.http.max_body_bytes, 1024);
}

#[test]
fn max_body_bytes_is_read_at_the_top_level_or_in_the_http_section() {
    let config = load_file("http: {max_body_bytes: 2048}\n", &[]).expect("valid");
    assert_eq!(config.http.max_body_bytes, 2048);
    let error =
        load_file("max_body_bytes: 1\nhttp: {max_body_bytes: 2}\n", &[]).expect_err("set twice");
    assert!(error.contains("keep one"), "{error}");
}

#[test]
fn unknown_file_keys_are_named() {
    for (text, needles) in [
        ("lisen: 127.0.0.1:9000\n", &["lisen", "`listen`"][..]),
        ("colour: red\n", &["colour", "`exchanges`"]),
        (
            "http:\n  colour: red\n",
            &["http", "colour", "`header_timeout`"],
        ),
        ("tls: {colour: red}\n", &["tls", "colour", "`cert`"]),
        (
            "amqp_tls: {colour: red}\n",
            &["amqp_tls", "colour", "`ca_file`"],
        ),
        ("auth: {colour: red}\n", &["auth", "colour", "`tokens`"]),
        (
            "auth: {tokens: [{name: a, token: b, colour: red}]}\n",
            &["colour"],
        ),
        ("listen: 127.0.0.1:1\nlisten: 127.0.0.1:2\n", &["listen"]),
    ] {
        let error = load_file(text, &[]).expect_err(text);
        for needle in needles {
            assert!(error.contains(needle), "{error} lacks {needle}");
        }
    }
}

#[test]
fn bad_values_name_their_key() {
    for (text, needle) in [
        ("listen: nowhere\n", "listen"),
        ("amqp_connections: many\n", "amqp_connections"),
        ("http: {max_headers: -1}\n", "http.max_headers"),
        (
            "amqp_connections: 0\n",
            "amqp_connections: must be at least 1",
        ),
        (
            "http: {header_timeout: 0}\n",
            "http.header_timeout: must be at least 1 second",
        ),
        (
            "http: {max_header_bytes: 100}\n",
            "http.max_header_bytes: must be at least 1024",
        ),
        (
            "lease_default: 20m\n",
            "lease_default: must be between 1 and lease_max (900 s)",
        ),
        (
            "broker_timeout: 0s\n",
            "broker_timeout: must be at least 1 second",
        ),
    ] {
        let error = load_file(text, &[]).expect_err(text);
        assert!(error.contains(needle), "{error} lacks {needle}");
    }
}

#[test]
fn an_empty_file_or_empty_sections_take_the_defaults() {
    for text in [
        "",
        "{}\n",
        "http: ~\nauth: ~\ntls: ~\namqp_tls: ~\nlisten: ~\n",
    ] {
        let config = load_file(text, &[]).expect(text);
        assert_eq!(config.server.listen.port(), 8080, "{text:?}");
    }
}

#[test]
fn file_topology_is_read_with_carrot_defaults() {
    let config = load_file(
        "exchanges:\n  - {name: links, type: topic}\n\
         queues:\n  - name: webshot\n    arguments: {x-max-priority: 9}\n    \
         bindings: [{exchange: links, routing_key: links.webshot}]\n\
         consumers:\n  - {name: set, queues: [webshot], prefetch: 5, ack: auto}\n",
        &[],
    )
    .expect("valid config");
    let (name, exchange) = &config.declarations.exchanges[0];
    assert_eq!(
        (name.as_str(), exchange.kind.as_str(), exchange.durable),
        ("links", "topic", true)
    );
    let (name, queue) = &config.declarations.queues[0];
    assert_eq!(name, "webshot");
    assert_eq!(queue.arguments["x-max-priority"], 9);
    assert_eq!(queue.bindings[0].routing_key, "links.webshot");
    assert_eq!(config.consumer_sets[0].1.prefetch, 5);
}

#[test]
fn bad_topology_entries_are_named() {
    for (text, needle) in [
        (
            "exchanges:\n  - {name: x, type: nonsense}\n",
            "exchanges: entry 0 (\"x\")",
        ),
        ("queues:\n  - {name: q, durabel: true}\n", "durabel"),
        ("queues:\n  - {durable: true}\n", "needs a string `name`"),
        (
            "consumers:\n  - {name: c, queues: []}\n",
            "consumers: entry 0",
        ),
        ("subscriptions:\n  - {name: s}\n", "missing field `queue`"),
        (
            "subscriptions:\n  - {name: s, queue: q, url: \"ftp://x\"}\n",
            "subscriptions: entry 0 (\"s\"): url",
        ),
        ("queues:\n  - {name: amq.q}\n", "reserved"),
        (
            "consumers:\n  - {name: x, queues: [q], prefetch: \"ten\"}\n",
            "consumers: entry 0 (\"x\"): prefetch: invalid type",
        ),
        (
            "subscriptions:\n  - {name: s, queue: q, url: \"http://h/\", concurrency: many}\n",
            "subscriptions: entry 0 (\"s\"): concurrency: invalid type",
        ),
        (
            "queues:\n  - {name: q, arguments: {x-queue-type: lazy}}\n",
            "arguments.x-queue-type",
        ),
        (
            "queues:\n  - {name: q, durable: false, arguments: {x-queue-type: stream}}\n",
            "must be durable",
        ),
    ] {
        let error = load_file(text, &[]).expect_err(text);
        assert!(error.contains(needle), "{error} lacks {needle}");
    }
}

#[test]
fn tokens_come_from_the_file_or_a_secret_file() {
    let secret = TempPath::with("from-a-file\n");
    let config = load_file(
        &format!(
            "auth:\n  tokens:\n    - {{name: a, token: s3cret, write: \"^a\\\\.\"}}\n    \
             - {{name: b, token_file: {}, read: \".*\"}}\n",
            secret.0.display()
        ),
        &["--listen", "0.0.0.0:8080"],
    )
    .expect("tokens allow a public listen address");
    let principal = config
        .auth
        .tokens
        .authenticate(Some("Bearer from-a-file"))
        .expect("file token");
    assert_eq!(principal.name(), Some("b"));
    assert!(
        config
            .auth
            .tokens
            .authenticate(Some("Bearer s3cret"))
            .is_ok()
    );
}

#[test]
fn only_the_file_lets_requests_without_a_token_in() {
    let token = "auth:\n  tokens: [{name: a, token: s3cret}]\n";
    let config = load_file(token, &["--allow-anonymous"]).expect("valid");
    assert!(config.auth.tokens.authenticate(None).is_err());
    let config = load_file(&format!("{token}  allow_anonymous: true\n"), &[]).expect("valid");
    assert!(config.auth.tokens.authenticate(None).is_ok());
}

#[test]
fn a_vhost_the_broker_could_not_quote_safely_is_refused() {
    let error =
        load(&["--amqp-url", "amqp://guest:guest@127.0.0.1/caf%C3%A9"]).expect_err("refused");
    assert!(error.starts_with("amqp_url: the vhost \"café\""), "{error}");
    load(&["--amqp-url", "amqp://guest:guest@127.0.0.1/prod"]).expect("an ASCII vhost is fine");
}

#[test]
fn anonymous_public_listen_is_refused_unless_allowed() {
    let error = load(&["--listen", "0.0.0.0:8080"]).expect_err("refused");
    assert!(error.contains("--allow-anonymous"), "{error}");
    let config =
        load(&["--listen", "0.0.0.0:8080", "--allow-anonymous"]).expect("allowed explicitly");
    assert!(config.auth.allow_anonymous);
}

#[test]
fn several_broker_urls_come_comma_separated_or_as_a_list_in_the_file() {
    let config = load(&["--amqp-url", "amqp://a:5672/%2f,amqp://b:5673/%2f"]).expect("valid");
    assert_eq!(
        config.broker.settings().urls,
        ["amqp://a:5672/%2f", "amqp://b:5673/%2f"]
    );
    let config = load_file("amqp_url: [amqp://a/%2f, amqp://b/%2f]\n", &[]).expect("valid");
    assert_eq!(config.broker.settings().urls.len(), 2);
    let error = load(&["--amqp-url", "amqp://a/one,amqp://b/two"]).expect_err("refused");
    assert!(error.contains("different vhosts"), "{error}");
    let error = load(&["--amqp-url", "amqp://a/%2f,http://b/"]).expect_err("refused");
    assert!(error.contains("amqp://"), "{error}");
}

#[test]
fn replicas_need_an_address_and_a_long_enough_secret() {
    let secret = "0123456789abcdef0123456789abcdef";
    let config = load_file(
        &format!("cluster:\n  advertise_url: http://10.0.0.7:8080\n  peer_secret: {secret}\n"),
        &[],
    )
    .expect("valid");
    assert_eq!(
        config.cluster.advertised(),
        Some(("http://10.0.0.7:8080".to_owned(), secret))
    );
    let error = load(&["--advertise-url", "http://10.0.0.7:8080"]).expect_err("no secret");
    assert!(error.contains("peer_secret"), "{error}");
    let error = load(&[
        "--advertise-url",
        "http://10.0.0.7:8080",
        "--peer-secret",
        "short",
    ])
    .expect_err("short secret");
    assert!(error.contains("at least 32"), "{error}");
    for bad in [
        "10.0.0.7:8080",
        "ftp://10.0.0.7/",
        "http://10.0.0.7:8080/gateway",
    ] {
        let error = load(&["--advertise-url", bad, "--peer-secret", secret]).expect_err(bad);
        assert!(error.starts_with("advertise_url"), "{bad}: {error}");
    }
    assert!(load(&[]).expect("alone").cluster.advertised().is_none());
}
