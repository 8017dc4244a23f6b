//! carrot-bench: measures carrot-gateway against raw AMQP (lapin) and RabbitMQ's management
//! API on the same machine, and prints one table. `bench/run` builds and starts everything;
//! see bench/README.md.

mod amqp;
mod http;
mod procfs;
mod report;
mod stats;
mod web;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::Method;

use amqp::Amqp;
use http::HttpConn;
use stats::{Tally, Window};
use web::{Job, Kind, StreamOutcome};

const USAGE: &str = "\
usage: carrot-bench free-port
       carrot-bench run --gateway HOST:PORT --gateway-pid PID [options]

options:
  --broker-pid PID          RabbitMQ's process, to report its CPU use
  --clk-tck N               clock ticks per second of /proc/<pid>/stat (default 100)
  --amqp-url URL            default amqp://guest:guest@127.0.0.1:5672/%2f
  --management HOST:PORT    RabbitMQ management API (default 127.0.0.1:15672)
  --amqp-connections N      AMQP connections the raw scenarios spread channels over (default 2)
  --warmup S                warm-up before each timed scenario (default 1)
  --duration S              measured time of each timed scenario (default 6)
  --drain-limit S           longest measured time of a drain scenario (default 6)
  --prefill N               messages put in the queue before a drain scenario (default 60000)
  --management-prefill N    the same for the management get scenario (default 8000)
  --only IDS                comma-separated scenario ids (or prefixes) to run
  --markdown FILE           also write the Markdown table to FILE
";

#[derive(Debug, Clone)]
pub struct Args {
    gateway: String,
    gateway_pid: String,
    broker_pid: Option<String>,
    clk_tck: f64,
    amqp_url: String,
    management: String,
    amqp_connections: usize,
    warmup: Duration,
    duration: Duration,
    drain_limit: Duration,
    prefill: u64,
    management_prefill: u64,
    only: Vec<String>,
    markdown: Option<String>,
}

fn parse_args(mut raw: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut args = Args {
        gateway: String::new(),
        gateway_pid: String::new(),
        broker_pid: None,
        clk_tck: 100.0,
        amqp_url: "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned(),
        management: "127.0.0.1:15672".to_owned(),
        amqp_connections: 2,
        warmup: Duration::from_secs(1),
        duration: Duration::from_secs(6),
        drain_limit: Duration::from_secs(6),
        prefill: 60_000,
        management_prefill: 8_000,
        only: Vec::new(),
        markdown: None,
    };
    let seconds = |value: String| -> Result<Duration, String> {
        value
            .parse::<f64>()
            .ok()
            .filter(|s| *s >= 0.0 && *s <= 600.0)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| format!("not a number of seconds (0-600): {value}"))
    };
    let number = |value: String| -> Result<u64, String> {
        value
            .parse::<u64>()
            .map_err(|_| format!("not a count: {value}"))
    };
    while let Some(flag) = raw.next() {
        let mut value = || raw.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--gateway" => args.gateway = value()?,
            "--gateway-pid" => args.gateway_pid = value()?,
            "--broker-pid" => args.broker_pid = Some(value()?).filter(|pid| !pid.is_empty()),
            "--clk-tck" => args.clk_tck = number(value()?)?.max(1) as f64,
            "--amqp-url" => args.amqp_url = value()?,
            "--management" => args.management = value()?,
            "--amqp-connections" => args.amqp_connections = number(value()?)?.clamp(1, 16) as usize,
            "--warmup" => args.warmup = seconds(value()?)?,
            "--duration" => args.duration = seconds(value()?)?,
            "--drain-limit" => args.drain_limit = seconds(value()?)?,
            "--prefill" => args.prefill = number(value()?)?.clamp(1, 2_000_000),
            "--management-prefill" => args.management_prefill = number(value()?)?.clamp(1, 200_000),
            "--only" => {
                args.only = value()?
                    .split(',')
                    .map(str::trim)
                    .filter(|id| !id.is_empty())
                    .map(str::to_owned)
                    .collect();
            }
            "--markdown" => args.markdown = Some(value()?),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown option {other}")),
        }
    }
    if args.gateway.is_empty() || args.gateway_pid.is_empty() {
        return Err("--gateway and --gateway-pid are required".to_owned());
    }
    Ok(args)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let mut raw = std::env::args().skip(1);
    let outcome = match raw.next().as_deref() {
        Some("free-port") => free_port(),
        Some("run") => match parse_args(raw) {
            Ok(args) => run(args).await,
            Err(error) if error.is_empty() => {
                print!("{USAGE}");
                Ok(())
            }
            Err(error) => Err(format!("{error}\n{USAGE}")),
        },
        Some("-h" | "--help" | "help") => {
            print!("{USAGE}");
            Ok(())
        }
        _ => Err(USAGE.to_owned()),
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("carrot-bench: {}", error.trim_end());
            std::process::ExitCode::from(2)
        }
    }
}

/// Prints a loopback port that was free a moment ago.
fn free_port() -> Result<(), String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|error| error.to_string())?;
    let port = listener
        .local_addr()
        .map_err(|error| error.to_string())?
        .port();
    println!("{port}");
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    Raw,
    Gateway,
    Management,
}

#[derive(Debug, Clone, Copy)]
pub enum What {
    RawPublish,
    RawPipelined { window: u64 },
    RawGet { no_ack: bool },
    RawConsume { prefetch: u16 },
    Http(Kind),
    Stream { prefetch: u16 },
}

impl What {
    /// Drain scenarios take from a pre-filled queue until it is empty or time is up.
    fn drains(self) -> bool {
        matches!(
            self,
            What::RawGet { .. }
                | What::RawConsume { .. }
                | What::Stream { .. }
                | What::Http(Kind::GatewayNextAuto | Kind::GatewayLeaseAck | Kind::ManagementGet)
        )
    }

    /// Whether a row has a latency per request.
    pub fn has_latency(self) -> bool {
        !matches!(self, What::RawConsume { .. } | What::Stream { .. })
    }
}

#[derive(Debug, Clone)]
pub struct Spec {
    pub id: &'static str,
    pub group: Group,
    pub label: &'static str,
    pub clients: usize,
    pub what: What,
}

const BATCH: u64 = 100;
const PIPELINE_WINDOW: u64 = 100;
const BATCH_CLIENTS: usize = 8;
const GET_CLIENTS: usize = 64;
const PREFETCH: u16 = 100;
const MANAGEMENT_CLIENTS: usize = 64;

fn specs() -> Vec<Spec> {
    let spec = |id, group, label, clients, what| Spec {
        id,
        group,
        label,
        clients,
        what,
    };
    use Group::{Gateway, Management, Raw};
    vec![
        spec(
            "raw-publish-1",
            Raw,
            "raw AMQP publish+confirm, one at a time",
            1,
            What::RawPublish,
        ),
        spec(
            "raw-publish-8",
            Raw,
            "raw AMQP publish+confirm, one at a time",
            8,
            What::RawPublish,
        ),
        spec(
            "raw-publish-64",
            Raw,
            "raw AMQP publish+confirm, one at a time",
            64,
            What::RawPublish,
        ),
        spec(
            "raw-pipelined",
            Raw,
            "raw AMQP publish, windows of 100 confirms",
            BATCH_CLIENTS,
            What::RawPipelined {
                window: PIPELINE_WINDOW,
            },
        ),
        spec(
            "raw-get",
            Raw,
            "raw AMQP basic.get no_ack",
            GET_CLIENTS,
            What::RawGet { no_ack: true },
        ),
        spec(
            "raw-get-ack",
            Raw,
            "raw AMQP basic.get + basic.ack",
            GET_CLIENTS,
            What::RawGet { no_ack: false },
        ),
        spec(
            "raw-consume",
            Raw,
            "raw AMQP basic.consume prefetch 100 + ack",
            1,
            What::RawConsume { prefetch: PREFETCH },
        ),
        spec(
            "gw-publish-1",
            Gateway,
            "gateway POST message (raw mode)",
            1,
            What::Http(Kind::GatewayPublish),
        ),
        spec(
            "gw-publish-8",
            Gateway,
            "gateway POST message (raw mode)",
            8,
            What::Http(Kind::GatewayPublish),
        ),
        spec(
            "gw-publish-64",
            Gateway,
            "gateway POST message (raw mode)",
            64,
            What::Http(Kind::GatewayPublish),
        ),
        spec(
            "gw-batch",
            Gateway,
            "gateway POST batch of 100",
            BATCH_CLIENTS,
            What::Http(Kind::GatewayBatch),
        ),
        spec(
            "gw-next-auto",
            Gateway,
            "gateway GET next?ack=auto",
            GET_CLIENTS,
            What::Http(Kind::GatewayNextAuto),
        ),
        spec(
            "gw-lease-ack",
            Gateway,
            "gateway GET next (lease) + POST ack",
            GET_CLIENTS,
            What::Http(Kind::GatewayLeaseAck),
        ),
        spec(
            "gw-stream",
            Gateway,
            "gateway SSE stream ack=auto prefetch 100",
            1,
            What::Stream { prefetch: PREFETCH },
        ),
        spec(
            "mgmt-publish",
            Management,
            "management API publish",
            MANAGEMENT_CLIENTS,
            What::Http(Kind::ManagementPublish),
        ),
        spec(
            "mgmt-get",
            Management,
            "management API get (ack_requeue_false)",
            MANAGEMENT_CLIENTS,
            What::Http(Kind::ManagementGet),
        ),
    ]
}

/// The order the scenarios run in: each gateway row right after the raw row it is compared
/// with (and the management row after them), so that a change in the machine's load between
/// the two halves of a ratio is as small as it can be. The table keeps the order of `specs`.
const RUN_ORDER: &[&str] = &[
    "raw-publish-1",
    "gw-publish-1",
    "raw-publish-8",
    "gw-publish-8",
    "raw-publish-64",
    "gw-publish-64",
    "mgmt-publish",
    "raw-pipelined",
    "gw-batch",
    "raw-get",
    "gw-next-auto",
    "mgmt-get",
    "raw-get-ack",
    "gw-lease-ack",
    "raw-consume",
    "gw-stream",
];

fn run_position(id: &str) -> usize {
    RUN_ORDER
        .iter()
        .position(|other| *other == id)
        .unwrap_or(RUN_ORDER.len())
}

/// What one row measured.
#[derive(Debug, Default)]
pub struct Measured {
    pub msgs: u64,
    pub elapsed: Duration,
    pub rate: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub tally: Tally,
    pub gateway_cpu_s: Option<f64>,
    pub gateway_cores: Option<f64>,
    pub broker_cores: Option<f64>,
    pub bench_cores: Option<f64>,
    /// CPU used by every other process on the machine during the window.
    pub other_cores: Option<f64>,
    pub iowait_cores: Option<f64>,
    pub gateway_rss_kib: Option<u64>,
    /// Set when the queue ran dry before the window ended.
    pub drained_early: bool,
}

#[derive(Debug)]
pub enum Outcome {
    Measured(Box<Measured>),
    /// Not run: why.
    Skipped(String),
    /// Could not run (set-up failed): evidence.
    Failed(String),
}

#[derive(Debug)]
pub struct Row {
    pub spec: Spec,
    pub outcome: Outcome,
}

/// Process CPU counters at one instant.
#[derive(Debug, Clone, Copy)]
struct Probe {
    at: Instant,
    gateway: Option<u64>,
    broker: Option<u64>,
    bench: Option<u64>,
    machine: Option<(u64, u64)>,
}

impl Probe {
    fn take(gateway_pid: &str, broker_pid: Option<&str>) -> Self {
        Self {
            at: Instant::now(),
            gateway: procfs::cpu_ticks(gateway_pid),
            broker: broker_pid.and_then(procfs::cpu_ticks),
            bench: procfs::cpu_ticks("self"),
            machine: procfs::machine_ticks(),
        }
    }
}

struct Ctx {
    args: Args,
    amqp: Amqp,
    body: Bytes,
    run_id: String,
    management_ok: Result<(), String>,
    request_timeout: Duration,
}

impl Ctx {
    fn probe(&self) -> Probe {
        Probe::take(&self.args.gateway_pid, self.args.broker_pid.as_deref())
    }

    fn queue_name(&self, spec: &Spec) -> String {
        format!("carrot-bench-{}-{}", self.run_id, spec.id)
    }
}

async fn run(args: Args) -> Result<(), String> {
    let request_timeout = Duration::from_secs(15);
    eprintln!("waiting for the gateway at http://{}/readyz", args.gateway);
    let pid = args.gateway_pid.clone();
    tokio::select! {
        ready = wait_for(&args.gateway, "/readyz", None, Duration::from_secs(60)) => {
            ready.map_err(|error| format!("the gateway did not become ready: {error}"))?;
        }
        () = exited(&pid) => return Err("the gateway exited before it was ready".to_owned()),
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_rss = procfs::status_kib(&args.gateway_pid, "VmRSS");
    let start_cpu = procfs::cpu_ticks(&args.gateway_pid);

    let management_ok = wait_for(
        &args.management,
        "/api/overview",
        Some("Basic Z3Vlc3Q6Z3Vlc3Q="),
        Duration::from_secs(60),
    )
    .await
    .map_err(|error| format!("the management API did not answer: {error}"));
    if let Err(error) = &management_ok {
        eprintln!("{error}: skipping the management rows");
    }

    let amqp = Amqp::connect(&args.amqp_url, args.amqp_connections).await?;
    // 1 KiB of printable text: the same bytes travel as a raw body, a batch string, a payload.
    let body: Bytes = (0..1024u32)
        .map(|i| b"abcdefghijklmnopqrstuvwxyz0123456789"[(i % 36) as usize])
        .collect::<Vec<u8>>()
        .into();
    let run_id = format!("{}", std::process::id());
    let ctx = Ctx {
        args: args.clone(),
        amqp,
        body,
        run_id,
        management_ok,
        request_timeout,
    };

    let mut selected: Vec<Spec> = specs()
        .into_iter()
        .filter(|spec| {
            ctx.args.only.is_empty()
                || ctx
                    .args
                    .only
                    .iter()
                    .any(|id| spec.id.starts_with(id.as_str()))
        })
        .collect();
    selected.sort_by_key(|spec| run_position(spec.id));
    let load_before = procfs::load_average();
    let started = Instant::now();
    let mut rows = Vec::with_capacity(selected.len());
    for spec in selected {
        eprint!("{:<15} {:>3} clients ... ", spec.id, spec.clients);
        let outcome = run_spec(&ctx, &spec).await;
        match &outcome {
            Outcome::Measured(m) => eprintln!(
                "{:>8.0} msg/s  ({} msgs in {:.1} s{})",
                m.rate,
                m.msgs,
                m.elapsed.as_secs_f64(),
                if m.tally.non_2xx.is_empty() && m.tally.failures == 0 {
                    ""
                } else {
                    ", ERRORS"
                }
            ),
            Outcome::Skipped(why) => eprintln!("skipped: {why}"),
            Outcome::Failed(why) => eprintln!("FAILED: {why}"),
        }
        rows.push(Row { spec, outcome });
    }
    let display: Vec<&str> = specs().iter().map(|spec| spec.id).collect();
    rows.sort_by_key(|row: &Row| display.iter().position(|id| *id == row.spec.id));
    // Whatever happened above, leave no queue of ours behind.
    for spec in specs() {
        let _ = ctx.amqp.delete(&ctx.queue_name(&spec)).await;
    }
    ctx.amqp.close().await;

    let end_cpu = procfs::cpu_ticks(&args.gateway_pid);
    let summary = report::Summary {
        idle_rss_kib: idle_rss,
        peak_rss_kib: procfs::status_kib(&args.gateway_pid, "VmHWM"),
        end_rss_kib: procfs::status_kib(&args.gateway_pid, "VmRSS"),
        total_cpu_s: end_cpu.map(|ticks| ticks as f64 / args.clk_tck),
        run_cpu_s: end_cpu
            .zip(start_cpu)
            .map(|(end, start)| end.saturating_sub(start) as f64 / args.clk_tck),
        wall: started.elapsed(),
        gateway_alive: procfs::alive(&args.gateway_pid),
        load_before,
        load_after: procfs::load_average(),
    };
    let text = report::render(&rows, &summary);
    println!("{}", text.plain);
    println!("{}", text.markdown);
    if let Some(path) = &args.markdown {
        std::fs::write(path, &text.markdown).map_err(|error| format!("writing {path}: {error}"))?;
    }
    Ok(())
}

/// Resolves when the process is gone.
async fn exited(pid: &str) {
    while procfs::alive(pid) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls `path` until it answers 200.
async fn wait_for(
    addr: &str,
    path: &str,
    auth: Option<&str>,
    limit: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    let mut last = String::from("no answer");
    while Instant::now() < deadline {
        let mut conn = HttpConn::new(addr, Duration::from_secs(5));
        let mut request = conn.request(Method::GET, path);
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        match conn.send(request.empty()).await {
            Ok(answer) if answer.status == 200 => return Ok(()),
            Ok(answer) => {
                last = format!("HTTP {}: {}", answer.status, stats::excerpt(&answer.body))
            }
            Err(error) => last = error,
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(last)
}

async fn run_spec(ctx: &Ctx, spec: &Spec) -> Outcome {
    if spec.group == Group::Management
        && let Err(error) = &ctx.management_ok
    {
        return Outcome::Skipped(error.clone());
    }
    if spec.group == Group::Gateway && !procfs::alive(&ctx.args.gateway_pid) {
        return Outcome::Failed("the gateway process has exited".to_owned());
    }
    let queue = ctx.queue_name(spec);
    if let Err(error) = create_queue(ctx, spec, &queue).await {
        let _ = ctx.amqp.delete(&queue).await;
        return Outcome::Failed(format!("creating queue {queue}: {error}"));
    }
    let mut outcome = measure(ctx, spec, &queue).await;
    if let Err(error) = delete_queue(ctx, spec, &queue).await {
        let _ = ctx.amqp.delete(&queue).await;
        // A failed clean-up is an error of the row, not something to pass over.
        if let Outcome::Measured(m) = &mut outcome {
            m.tally.failure(format!("deleting the queue: {error}"));
        }
    }
    outcome
}

/// Gateway rows set up and remove their queue through the gateway, the others over AMQP.
async fn create_queue(ctx: &Ctx, spec: &Spec, queue: &str) -> Result<(), String> {
    if spec.group != Group::Gateway {
        return ctx.amqp.declare(queue).await;
    }
    let mut conn = HttpConn::new(&ctx.args.gateway, ctx.request_timeout);
    let request = conn
        .request(Method::PUT, &format!("/queues/{}", web::segment(queue)))
        .content_type("application/json")
        .body(Bytes::from_static(br#"{"durable": true}"#));
    match conn.send(request).await? {
        answer if answer.status == 200 || answer.status == 201 => Ok(()),
        answer => Err(format!(
            "PUT /queues answered {}: {}",
            answer.status,
            stats::excerpt(&answer.body)
        )),
    }
}

async fn delete_queue(ctx: &Ctx, spec: &Spec, queue: &str) -> Result<(), String> {
    if spec.group != Group::Gateway {
        return ctx.amqp.delete(queue).await.map(|_| ());
    }
    let mut conn = HttpConn::new(&ctx.args.gateway, ctx.request_timeout);
    let request = conn
        .request(Method::DELETE, &format!("/queues/{}", web::segment(queue)))
        .empty();
    match conn.send(request).await? {
        answer if answer.status == 200 || answer.status == 204 => Ok(()),
        answer => Err(format!(
            "DELETE /queues answered {}: {}",
            answer.status,
            stats::excerpt(&answer.body)
        )),
    }
}

async fn measure(ctx: &Ctx, spec: &Spec, queue: &str) -> Outcome {
    let prefill = if spec.group == Group::Management {
        ctx.args.management_prefill
    } else {
        ctx.args.prefill
    };
    if spec.what.drains()
        && let Err(error) = ctx.amqp.prefill(queue, prefill, &ctx.body).await
    {
        return Outcome::Failed(format!("pre-filling {queue}: {error}"));
    }
    // Channels are opened before the clock starts.
    let mut channels = Vec::new();
    if let What::RawPublish
    | What::RawPipelined { .. }
    | What::RawGet { .. }
    | What::RawConsume { .. } = spec.what
    {
        let confirm = matches!(spec.what, What::RawPublish | What::RawPipelined { .. });
        for index in 0..spec.clients {
            match ctx.amqp.channel(index, confirm).await {
                Ok(channel) => channels.push(channel),
                Err(error) => return Outcome::Failed(format!("opening channels: {error}")),
            }
        }
    }

    let window = if spec.what.drains() {
        Window::new(Duration::from_millis(300), ctx.args.drain_limit)
    } else {
        Window::new(ctx.args.warmup, ctx.args.duration)
    };
    let idle = Duration::from_secs(1);
    let queue_arc: Arc<str> = Arc::from(queue);
    let body = ctx.body.clone();
    let probe_ctx = (ctx.args.gateway_pid.clone(), ctx.args.broker_pid.clone());
    let first_probe = tokio::spawn(async move {
        tokio::time::sleep_until(window.warm_end.into()).await;
        Probe::take(&probe_ctx.0, probe_ctx.1.as_deref())
    });

    let mut tasks = Vec::new();
    match spec.what {
        What::RawPublish => {
            for channel in channels {
                tasks.push(tokio::spawn(amqp::publish_one_at_a_time(
                    channel,
                    queue_arc.clone(),
                    body.clone(),
                    window,
                )));
            }
        }
        What::RawPipelined { window: size } => {
            for channel in channels {
                tasks.push(tokio::spawn(amqp::publish_pipelined(
                    channel,
                    queue_arc.clone(),
                    body.clone(),
                    size,
                    window,
                )));
            }
        }
        What::RawGet { no_ack } => {
            for channel in channels {
                tasks.push(tokio::spawn(amqp::get(
                    channel,
                    queue_arc.clone(),
                    no_ack,
                    window,
                )));
            }
        }
        What::RawConsume { prefetch } => {
            for channel in channels {
                tasks.push(tokio::spawn(amqp::consume(
                    channel,
                    queue_arc.clone(),
                    prefetch,
                    prefill,
                    idle,
                    window,
                )));
            }
        }
        What::Http(kind) => {
            let addr = if spec.group == Group::Management {
                &ctx.args.management
            } else {
                &ctx.args.gateway
            };
            let job = Arc::new(Job::new(
                kind,
                addr,
                queue,
                &body,
                BATCH,
                ctx.request_timeout,
            ));
            for _ in 0..spec.clients {
                tasks.push(tokio::spawn(web::worker(job.clone(), window)));
            }
        }
        What::Stream { prefetch } => {
            let gateway = ctx.args.gateway.clone();
            let queue = queue.to_owned();
            let timeout = ctx.request_timeout;
            let outcome =
                web::stream(&gateway, &queue, prefetch, prefill, idle, timeout, window).await;
            match outcome {
                StreamOutcome::Missing(evidence) => {
                    first_probe.abort();
                    return Outcome::Skipped(format!(
                        "the gateway has no stream endpoint yet ({evidence})"
                    ));
                }
                StreamOutcome::Ran(tally) => tasks.push(tokio::spawn(async move { tally })),
            }
        }
    }
    let mut tally = Tally::default();
    for task in tasks {
        match task.await {
            Ok(part) => tally.merge(part),
            Err(error) => tally.failure(format!("a worker panicked: {error}")),
        }
    }
    let last = ctx.probe();
    let first = if first_probe.is_finished() {
        first_probe.await.ok()
    } else {
        first_probe.abort();
        None
    };

    let elapsed = tally.elapsed(&window);
    let secs = elapsed.as_secs_f64();
    let mut sorted = std::mem::take(&mut tally.latencies_us);
    sorted.sort_unstable();
    let wall = first.map(|first| last.at.duration_since(first.at).as_secs_f64());
    let delta = |pick: fn(&Probe) -> Option<u64>| -> Option<f64> {
        let first = first.as_ref()?;
        let ticks = pick(&last)?.checked_sub(pick(first)?)?;
        Some(ticks as f64 / ctx.args.clk_tck)
    };
    let cores = |cpu: Option<f64>| cpu.zip(wall).filter(|(_, w)| *w > 0.0).map(|(c, w)| c / w);
    let gateway_cpu = delta(|p| p.gateway);
    let broker_cpu = delta(|p| p.broker);
    let bench_cpu = delta(|p| p.bench);
    let busy = delta(|p| p.machine.map(|m| m.0));
    // Everything else on the machine: other processes competing for the same cores.
    let other_cpu = busy.map(|busy| {
        busy - gateway_cpu.unwrap_or(0.0) - broker_cpu.unwrap_or(0.0) - bench_cpu.unwrap_or(0.0)
    });
    let measured = Measured {
        msgs: tally.msgs,
        elapsed,
        rate: if secs > 0.0 {
            tally.msgs as f64 / secs
        } else {
            0.0
        },
        p50_ms: spec
            .what
            .has_latency()
            .then(|| Tally::quantile_ms(&sorted, 0.50))
            .flatten(),
        p99_ms: spec
            .what
            .has_latency()
            .then(|| Tally::quantile_ms(&sorted, 0.99))
            .flatten(),
        gateway_cpu_s: gateway_cpu,
        gateway_cores: cores(gateway_cpu),
        broker_cores: cores(broker_cpu),
        bench_cores: cores(bench_cpu),
        other_cores: cores(other_cpu.map(|c| c.max(0.0))),
        iowait_cores: cores(delta(|p| p.machine.map(|m| m.1))),
        gateway_rss_kib: procfs::status_kib(&ctx.args.gateway_pid, "VmRSS"),
        drained_early: tally.drained
            && elapsed + Duration::from_millis(50) < window.end.duration_since(window.warm_end),
        tally,
    };
    Outcome::Measured(Box::new(measured))
}
