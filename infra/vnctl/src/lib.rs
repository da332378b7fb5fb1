//! vnctl, the operator's CLI. Works against the local stack (`source .local/dev/dev.env`) or a
//! deployed one (`--profile`, `--region`, and the stack's outputs as options or environment).

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use base64::Engine;
use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};
use vnmask::config::{ConfigError, Env, StoreConfig};
use vnmask::crypto::{CryptoError, Vault};
use vnmask::domain::invariant::{Audit, Breach};
use vnmask::domain::{
    now, Capabilities, Capability, Hold, HoldNote, HoldReason, Market, NumberError, NumberState,
    OrderId, PhoneError, PoolNumber, Provider, RealNumber, Session, SessionState, VirtualNumber,
};
use vnmask::events::OrderEvent;
use vnmask::providers::{exotel, twilio};
use vnmask::store::{AssignmentStore, AuditStore, PoolStore, PoolWriteError, Store, StoreError};

const EXAMPLES: &str = "\
Examples:
  source .local/dev/dev.env                      # the local stack's endpoints, table and keys
  vnctl publish tests/fixtures/events/driver-assigned.json
  vnctl session show ord-1001
  vnctl simulate call --from +919812345678 --to +911140000010
  vnctl simulate sms --from +919812345678 --to +911140000010 --body 'at the gate'
  vnctl simulate call --provider exotel --from 09812345678 --to 01140000010
  vnctl simulate call --from +919720000042 --to +911140000010 --pin 048213
  vnctl pool list --market IN --json
  vnctl pool drain +911140000010 --market IN
  vnctl dlq list
  vnctl dlq replay --max 10
  vnctl keys generate --kms-key alias/vnmask-data
  vnctl audit --read-units-per-second 20 --max-read-units 50000

Exit codes: 0 done (audit: no breach), 1 an AWS or HTTP call failed, 2 bad usage or input,
3 not found, 4 audit found breaches, 5 audit stopped at --max-read-units (incomplete).";

/// `vnctl audit` found breaches of the pair invariant.
const EXIT_BREACHES: u8 = 4;
/// `vnctl audit` stopped at its read-unit cap before the end of the table.
const EXIT_INCOMPLETE: u8 = 5;

#[derive(Debug, Parser)]
#[command(name = "vnctl", version, about = "Operate vnmask: events, sessions, calls, the pool, the DLQ, keys, audits.", after_help = EXAMPLES)]
pub struct Cli {
    /// Send every AWS call to this endpoint (e.g. a local stand-in on 127.0.0.1).
    #[arg(long, global = true, env = "VNCTL_ENDPOINT_URL")]
    endpoint_url: Option<String>,
    /// AWS profile for a deployed stack.
    #[arg(long, global = true)]
    profile: Option<String>,
    /// AWS region for a deployed stack.
    #[arg(long, global = true)]
    region: Option<String>,
    /// Print JSON for scripts instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Publish an order event (docs/events.md) to the order-events queue.
    Publish {
        /// A JSON file with one event, or - for standard input.
        file: PathBuf,
        #[arg(long, env = "VNMASK_ORDER_EVENTS_QUEUE_URL")]
        queue_url: String,
    },
    /// Show sessions.
    #[command(subcommand)]
    Session(SessionCommand),
    /// Send a correctly signed Twilio webhook request and print the decision.
    #[command(subcommand)]
    Simulate(SimulateCommand),
    /// List and change the pool of virtual numbers.
    #[command(subcommand)]
    Pool(PoolCommand),
    /// Inspect and replay dead-lettered order events.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Key material for the functions' configuration.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Check the pair invariant over the whole table (routes live both ways, in their live
    /// session): read-only, a paced Scan.
    Audit(AuditArgs),
}

#[derive(Debug, Args)]
struct AuditArgs {
    /// Pace the walk so that it consumes at most this many read units per second on average.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    read_units_per_second: u32,
    /// Items read per Scan page (a page also stops at 1 MB).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    page_size: u32,
    /// Stop once the walk has consumed this many read units (it may pass it by one page): the
    /// audit is then incomplete, checks nothing and exits 5.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    max_read_units: Option<u64>,
}

#[derive(Debug, Subcommand)]
enum SessionCommand {
    /// An order's session: participants, contacts, state (real numbers redacted).
    Show {
        order_id: String,
        /// Show real numbers (needs the data keys, i.e. kms:Decrypt).
        #[arg(long)]
        reveal: bool,
    },
}

#[derive(Debug, Args)]
struct Call {
    /// The caller's real number: E.164, or with exotel the market's national forms.
    #[arg(long)]
    from: String,
    /// The virtual number dialled: E.164, or with exotel the market's national forms.
    #[arg(long)]
    to: String,
    /// Whose request to send: twilio (a signed form POST) or exotel (the Connect applet's GET,
    /// calls only).
    #[arg(long, value_enum, default_value = "twilio")]
    provider: SimulatedProvider,
    /// The webhook's public base URL (the stack's API URL; locally the cargo lambda watch URL).
    #[arg(long, env = "VNMASK_PUBLIC_BASE_URL")]
    webhook_base: String,
    /// Twilio auth token(s) the webhook trusts; the first signs.
    #[arg(long, env = "VNMASK_TWILIO_AUTH_TOKENS", hide_env_values = true)]
    auth_token: Option<String>,
    /// Exotel token(s) the webhook trusts; the first is presented.
    #[arg(long, env = "VNMASK_EXOTEL_TOKENS", hide_env_values = true)]
    exotel_token: Option<String>,
    /// The market whose national forms Exotel's numbers come in.
    #[arg(long, env = "VNMASK_EXOTEL_MARKET", default_value = "IN")]
    exotel_market: String,
    /// Calls only: if the webhook asks for a PIN, key in these digits (Twilio's `<Gather>`
    /// post, or Exotel's second Connect request after a Gather applet).
    #[arg(long)]
    pin: Option<String>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum SimulatedProvider {
    Twilio,
    Exotel,
}

#[derive(Debug, Subcommand)]
enum SimulateCommand {
    /// A voice call: prints whether it connects.
    Call(Call),
    /// A text message.
    Sms {
        #[command(flatten)]
        call: Call,
        #[arg(long, default_value = "hello from vnctl")]
        body: String,
    },
}

#[derive(Debug, Subcommand)]
enum PoolCommand {
    /// The market's numbers, with state, provider and capabilities.
    List {
        #[arg(long)]
        market: String,
        /// Only numbers in this state (active, draining, quarantined, cooling_off, retired).
        #[arg(long)]
        state: Option<String>,
    },
    /// Stop giving the number new contacts; its live routes keep working.
    Drain {
        number: String,
        #[arg(long)]
        market: String,
    },
    /// Take the number out of service.
    Retire {
        number: String,
        #[arg(long)]
        market: String,
    },
    /// Take the number out of service (number health): it gets no new pairs, and the next
    /// pool refresh moves its live pairs to healthy numbers (the old ones connect through the
    /// handover). It stays quarantined until released.
    Quarantine {
        number: String,
        #[arg(long)]
        market: String,
        /// Why, for whoever reads `pool list` (at most 120 characters; never a phone number).
        #[arg(long)]
        reason: String,
    },
    /// End a quarantine: the number cools off (no new pairs) for the cooling-off period, after
    /// which pool refresh lets it serve again.
    Release {
        number: String,
        #[arg(long)]
        market: String,
        #[arg(long, env = "VNMASK_COOLING_OFF_SECONDS", default_value_t = 604_800)]
        cooling_off_seconds: u32,
        /// Serve new pairs again at once, skipping the cooling-off (a number quarantined by
        /// mistake, whose users never stopped seeing it).
        #[arg(long)]
        at_once: bool,
    },
    /// Add a number (or bring one back) as active.
    Add {
        number: String,
        #[arg(long)]
        market: String,
        #[arg(long, default_value = "static")]
        provider: String,
        /// Comma-separated: voice, sms.
        #[arg(long, default_value = "voice,sms")]
        capabilities: String,
    },
}

#[derive(Debug, Subcommand)]
enum DlqCommand {
    /// Dead-lettered events with their reasons (bodies are not printed: they hold real numbers).
    List {
        #[arg(long, env = "VNMASK_DLQ_URL")]
        dlq_url: String,
        #[arg(long, default_value_t = 50)]
        max: usize,
    },
    /// Send dead-lettered events back to the order-events queue, then delete them from the DLQ.
    Replay {
        #[arg(long, env = "VNMASK_DLQ_URL")]
        dlq_url: String,
        #[arg(long, env = "VNMASK_ORDER_EVENTS_QUEUE_URL")]
        queue_url: String,
        #[arg(long, default_value_t = 10)]
        max: usize,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// New HMAC and data keys wrapped by a KMS key: the values of HmacKeyCiphertext and DataKeysCiphertext.
    Generate {
        #[arg(long)]
        kms_key: String,
        /// Name of the data key.
        #[arg(long, default_value = "k1")]
        name: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("{0}")]
    Failed(String),
}

impl CliError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            CliError::Failed(_) => ExitCode::from(1),
            CliError::Usage(_) => ExitCode::from(2),
            CliError::NotFound(_) => ExitCode::from(3),
        }
    }
}

impl From<ConfigError> for CliError {
    fn from(e: ConfigError) -> Self {
        CliError::Usage(format!(
            "{e} (source the stack's environment, e.g. .local/dev/dev.env)"
        ))
    }
}

impl From<StoreError> for CliError {
    fn from(e: StoreError) -> Self {
        CliError::Failed(e.to_string())
    }
}

impl From<CryptoError> for CliError {
    fn from(e: CryptoError) -> Self {
        CliError::Failed(e.to_string())
    }
}

impl From<PhoneError> for CliError {
    fn from(e: PhoneError) -> Self {
        CliError::Usage(e.to_string())
    }
}

fn sdk_error(e: impl std::error::Error + 'static) -> CliError {
    CliError::Failed(aws_sdk_sqs::error::DisplayErrorContext(e).to_string())
}

/// What a command prints: text for people, JSON for scripts.
pub struct Output {
    pub text: String,
    pub json: Value,
    /// The exit code: 0, or what the command found (`vnctl audit`: breaches, incomplete).
    pub code: u8,
}

pub async fn run(cli: Cli) -> Result<Output, CliError> {
    let sdk = sdk_config(&cli).await;
    match cli.command {
        Command::Publish { file, queue_url } => publish(&sdk, &file, &queue_url).await,
        Command::Session(SessionCommand::Show { order_id, reveal }) => {
            show_session(&sdk, &order_id, reveal).await
        }
        Command::Simulate(SimulateCommand::Call(call)) => simulate(&call, None).await,
        Command::Simulate(SimulateCommand::Sms { call, body }) => {
            simulate(&call, Some(&body)).await
        }
        Command::Pool(cmd) => pool(&sdk, cmd).await,
        Command::Dlq(DlqCommand::List { dlq_url, max }) => dlq_list(&sdk, &dlq_url, max).await,
        Command::Dlq(DlqCommand::Replay {
            dlq_url,
            queue_url,
            max,
        }) => dlq_replay(&sdk, &dlq_url, &queue_url, max).await,
        Command::Keys(KeysCommand::Generate { kms_key, name }) => keys(&sdk, &kms_key, &name).await,
        Command::Audit(args) => audit(&sdk, &args).await,
    }
}

async fn sdk_config(cli: &Cli) -> aws_config::SdkConfig {
    let mut loader = vnmask::aws::loader(vnmask::aws::SdkTimeouts::BACKGROUND);
    if let Some(url) = &cli.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    if let Some(profile) = &cli.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(region) = &cli.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    loader.load().await
}

async fn store(sdk: &aws_config::SdkConfig) -> Result<impl Store, CliError> {
    Ok(StoreConfig::from_source(&Env)?.connect(sdk).await?)
}

async fn publish(
    sdk: &aws_config::SdkConfig,
    file: &PathBuf,
    queue_url: &str,
) -> Result<Output, CliError> {
    let body = if file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| CliError::Usage(format!("reading stdin: {e}")))?;
        s
    } else {
        std::fs::read_to_string(file)
            .map_err(|e| CliError::Usage(format!("reading {}: {e}", file.display())))?
    };
    // Refuse what the assign function would dead-letter, before it reaches the queue.
    let event = OrderEvent::parse(&body)
        .map_err(|e| CliError::Usage(format!("not a valid order event: {e}")))?;
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let mut send = sqs.send_message().queue_url(queue_url).message_body(&body);
    if queue_url.ends_with(".fifo") {
        send = send
            .message_group_id(event.order_id.as_str())
            .message_deduplication_id(event.event_id.as_str());
    }
    let sent = send.send().await.map_err(sdk_error)?;
    let id = sent.message_id.unwrap_or_default();
    Ok(Output {
        text: format!(
            "published {} {} v{} as message {id}",
            event.event_type.as_str(),
            event.order_id,
            event.version
        ),
        json: json!({"message_id": id, "order_id": event.order_id.as_str(), "type": event.event_type.as_str(), "version": event.version}),
        code: 0,
    })
}

fn phone(n: &RealNumber, reveal: bool) -> String {
    if reveal {
        n.expose().to_owned()
    } else {
        n.to_string()
    }
}

fn session_json(s: &Session, reveal: bool) -> Value {
    let state = match s.state {
        SessionState::Active => "active",
        SessionState::Ended => "ended",
    };
    json!({
        "order_id": s.order_id.as_str(),
        "market": s.market.as_str(),
        "version": s.version,
        "state": state,
        "routes_until": s.routes_until,
        "participants": s.participants.iter().map(|p| json!({
            "role": p.role.as_str(), "user_id": p.user_id.as_str(), "phone": phone(&p.phone, reveal),
        })).collect::<Vec<_>>(),
        "contacts": s.contacts.iter().map(|c| json!({
            "a": c.a.as_str(), "b": c.b.as_str(), "virtual_number": c.number.as_str(),
        })).collect::<Vec<_>>(),
    })
}

async fn show_session(
    sdk: &aws_config::SdkConfig,
    order_id: &str,
    reveal: bool,
) -> Result<Output, CliError> {
    let order: OrderId = order_id
        .parse()
        .map_err(|e| CliError::Usage(format!("{e}")))?;
    let store = store(sdk).await?;
    let session = store
        .session(&order)
        .await?
        .ok_or_else(|| CliError::NotFound(format!("no session for order {order}")))?;
    let json = session_json(&session, reveal);
    let mut text = format!(
        "order {} ({}) version {} {}\n",
        session.order_id,
        session.market,
        session.version,
        json["state"].as_str().unwrap_or_default()
    );
    for p in &session.participants {
        text += &format!(
            "  {:<10} {:<16} {}\n",
            p.role.as_str(),
            p.user_id.as_str(),
            phone(&p.phone, reveal)
        );
    }
    for c in &session.contacts {
        text += &format!("  {} <-> {} via {}\n", c.a, c.b, c.number);
    }
    Ok(Output {
        text,
        json,
        code: 0,
    })
}

async fn simulate(call: &Call, sms_body: Option<&str>) -> Result<Output, CliError> {
    if call.pin.is_some() && sms_body.is_some() {
        return Err(CliError::Usage("--pin is for calls only".into()));
    }
    match (call.provider, sms_body) {
        (SimulatedProvider::Twilio, _) => simulate_twilio(call, sms_body).await,
        (SimulatedProvider::Exotel, None) => simulate_exotel(call).await,
        (SimulatedProvider::Exotel, Some(_)) => Err(CliError::Usage(
            "Exotel's Connect applet routes calls only; simulate a text with --provider twilio"
                .into(),
        )),
    }
}

/// The first of a comma-separated list of credentials.
fn first_credential(list: Option<&str>, flag: &str) -> Result<String, CliError> {
    list.and_then(|l| l.split(',').next())
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| CliError::Usage(format!("{flag} is required for this provider")))
}

async fn simulate_twilio(call: &Call, sms_body: Option<&str>) -> Result<Output, CliError> {
    RealNumber::parse(&call.from)?;
    VirtualNumber::parse(&call.to)?;
    let token = first_credential(call.auth_token.as_deref(), "--auth-token")?;
    let path = if sms_body.is_some() {
        "/v1/providers/twilio/sms"
    } else {
        "/v1/providers/twilio/voice"
    };
    let url = format!("{}{path}", call.webhook_base.trim_end_matches('/'));
    let sid = format!("{:032x}", rand_id());
    let mut params: Vec<(String, String)> = vec![
        ("AccountSid".into(), format!("AC{:032x}", 0u128)),
        ("From".into(), call.from.clone()),
        ("To".into(), call.to.clone()),
        ("Direction".into(), "inbound".into()),
        ("ApiVersion".into(), "2010-04-01".into()),
    ];
    match sms_body {
        Some(body) => {
            params.push(("MessageSid".into(), format!("SM{sid}")));
            params.push(("Body".into(), body.to_owned()));
            params.push(("NumMedia".into(), "0".into()));
        }
        None => {
            params.push(("CallSid".into(), format!("CA{sid}")));
            params.push(("CallStatus".into(), "ringing".into()));
        }
    }
    let post = |url: &str, params: &[(String, String)]| {
        let signature = twilio::sign(token.as_bytes(), url, params);
        reqwest::Client::new()
            .post(url)
            .header(twilio::SIGNATURE_HEADER, signature)
            .form(params)
    };
    let (mut status, mut twiml) = send(post(&url, &params)).await?;
    if let (Some(pin), true) = (&call.pin, twiml.contains("<Gather")) {
        // Twilio posts what the caller keyed to the <Gather>'s action, same call.
        let action = format!(
            "{}{}",
            call.webhook_base.trim_end_matches('/'),
            twilio::PIN_PATH
        );
        params.retain(|(k, _)| k != "CallStatus");
        params.push(("CallStatus".into(), "in-progress".into()));
        params.push(("Digits".into(), pin.clone()));
        (status, twiml) = send(post(&action, &params)).await?;
    }
    let decision = if twiml.contains("<Dial") || twiml.contains("<Message") {
        "connect"
    } else if twiml.contains("<Gather") {
        "ask_pin"
    } else {
        "refuse"
    };
    Ok(Output {
        text: format!("HTTP {status}: {decision}\n{twiml}"),
        json: json!({"status": status, "decision": decision, "twiml": twiml}),
        code: 0,
    })
}

/// The Connect applet's request, numbers as given (Exotel sends national forms); the answer
/// connects when it names a number to dial.
async fn simulate_exotel(call: &Call) -> Result<Output, CliError> {
    let market: Market = call.exotel_market.parse()?;
    RealNumber::parse_national(&call.from, &market)?;
    VirtualNumber::parse_national(&call.to, &market)?;
    let token = first_credential(call.exotel_token.as_deref(), "--exotel-token")?;
    let url = format!(
        "{}/v1/providers/exotel/connect",
        call.webhook_base.trim_end_matches('/')
    );
    let sid = format!("{:032x}", rand_id());
    let mut query = vec![
        ("CallSid", sid.as_str()),
        ("CallFrom", &call.from),
        ("CallTo", &call.to),
        ("Direction", "incoming"),
        ("CallType", "call-attempt"),
        (exotel::TOKEN_PARAM, &token),
    ];
    let (mut status, mut body) = send(reqwest::Client::new().get(&url).query(&query)).await?;
    let quoted = call.pin.as_ref().map(|pin| format!("\"{pin}\""));
    if let Some(digits) = &quoted {
        let answer: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        if answer["destination"]["numbers"]
            .as_array()
            .is_some_and(Vec::is_empty)
        {
            // The flow's Gather applet, then the second Connect applet: the same call, with
            // what was keyed in quoted as Exotel quotes it.
            query.push(("digits", digits));
            (status, body) = send(reqwest::Client::new().get(&url).query(&query)).await?;
        }
    }
    let answer: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let connects = answer["destination"]["numbers"]
        .as_array()
        .is_some_and(|n| !n.is_empty());
    let decision = if connects { "connect" } else { "refuse" };
    Ok(Output {
        text: format!("HTTP {status}: {decision}\n{body}"),
        json: json!({"status": status, "decision": decision, "answer": answer}),
        code: 0,
    })
}

async fn send(request: reqwest::RequestBuilder) -> Result<(u16, String), CliError> {
    let response = request
        .timeout(std::time::Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| CliError::Failed(format!("webhook request failed: {e}")))?;
    let status = response.status().as_u16();
    let body = response
        .text()
        .await
        .map_err(|e| CliError::Failed(format!("reading the answer: {e}")))?;
    Ok((status, body))
}

fn rand_id() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

async fn pool(sdk: &aws_config::SdkConfig, cmd: PoolCommand) -> Result<Output, CliError> {
    let store = store(sdk).await?;
    let market = |m: &str| m.parse::<Market>().map_err(CliError::from);
    match cmd {
        PoolCommand::List { market: m, state } => {
            let want = state
                .map(|s| {
                    s.parse::<NumberState>()
                        .map_err(|e| CliError::Usage(e.to_string()))
                })
                .transpose()?;
            let mut numbers: Vec<PoolNumber> = store
                .pool(&market(&m)?)
                .await?
                .into_iter()
                .filter(|n| want.is_none_or(|w| n.state == w))
                .collect();
            numbers.sort_by(|a, b| a.number.cmp(&b.number));
            let text = numbers
                .iter()
                .map(|n| {
                    let caps: Vec<&str> = n.capabilities.iter().map(Capability::as_str).collect();
                    let hold = n.hold.as_ref().map_or(String::new(), |h| {
                        let until = h.until.map_or(String::new(), |u| format!(" until {u}"));
                        let note = h
                            .note
                            .as_ref()
                            .map_or(String::new(), |n| format!(": {}", n.as_str()));
                        format!("  {} since {}{until}{note}", h.reason, h.since)
                    });
                    format!(
                        "{}  {:<11}  {:<8}  {}{hold}\n",
                        n.number,
                        n.state,
                        n.provider.as_str(),
                        caps.join(",")
                    )
                })
                .collect();
            let json = numbers.iter().map(number_json).collect::<Vec<_>>().into();
            Ok(Output {
                text,
                json,
                code: 0,
            })
        }
        PoolCommand::Drain { number, market: m } => {
            set_state(&store, &market(&m)?, &number, NumberState::Draining).await
        }
        PoolCommand::Retire { number, market: m } => {
            set_state(&store, &market(&m)?, &number, NumberState::Retired).await
        }
        PoolCommand::Quarantine {
            number,
            market: m,
            reason,
        } => {
            let note: HoldNote = reason
                .parse()
                .map_err(|e: NumberError| CliError::Usage(format!("--reason: {e}")))?;
            let (entry, version) = pool_entry(&store, &market(&m)?, &number).await?;
            let held = vnmask::pool::quarantine_by_operator(&entry, Some(note), now())
                .map_err(|e| CliError::Usage(e.to_string()))?;
            write_number(&store, &held, Some(version)).await
        }
        PoolCommand::Release {
            number,
            market: m,
            cooling_off_seconds,
            at_once,
        } => {
            let (entry, version) = pool_entry(&store, &market(&m)?, &number).await?;
            let released =
                vnmask::pool::release(&entry, i64::from(cooling_off_seconds), at_once, now())
                    .map_err(|e| CliError::Usage(e.to_string()))?;
            write_number(&store, &released, Some(version)).await
        }
        PoolCommand::Add {
            number,
            market: m,
            provider,
            capabilities,
        } => {
            let number = VirtualNumber::parse(&number)?;
            let provider: Provider = provider
                .parse()
                .map_err(|e| CliError::Usage(format!("{e}")))?;
            let capabilities = capabilities
                .split(',')
                .map(|c| c.trim().parse::<Capability>())
                .collect::<Result<Capabilities, _>>()
                .map_err(|e| CliError::Usage(e.to_string()))?;
            let market = market(&m)?;
            let current = store
                .pool_entries(&market)
                .await?
                .into_iter()
                .find(|e| e.number.number == number);
            let vn = PoolNumber {
                number,
                provider,
                market,
                capabilities,
                state: NumberState::Active,
                hold: None,
            };
            write_number(&store, &vn, current.map(|e| e.version)).await
        }
    }
}

async fn set_state(
    store: &impl Store,
    market: &Market,
    number: &str,
    state: NumberState,
) -> Result<Output, CliError> {
    let (entry, version) = pool_entry(store, market, number).await?;
    // A quarantine or cooling-off is ended by `release`, never dropped by another change.
    if state == NumberState::Draining
        && matches!(
            entry.state,
            NumberState::Quarantined | NumberState::CoolingOff
        )
    {
        return Err(CliError::Usage(format!(
            "{} is {}: release it first",
            entry.number, entry.state
        )));
    }
    // A retired number's live pairs are moved by the next pool refresh: it needs to know since
    // when the number has been retired.
    let hold = (state == NumberState::Retired).then(|| Hold {
        reason: HoldReason::Operator,
        since: now(),
        until: None,
        note: None,
    });
    let vn = PoolNumber {
        state,
        hold,
        ..entry
    };
    write_number(store, &vn, Some(version)).await
}

/// The pool number `number` of `market` as stored, with its version.
async fn pool_entry(
    store: &impl Store,
    market: &Market,
    number: &str,
) -> Result<(PoolNumber, u64), CliError> {
    let number = VirtualNumber::parse(number)?;
    let entry = store
        .pool_entries(market)
        .await?
        .into_iter()
        .find(|e| e.number.number == number)
        .ok_or_else(|| CliError::NotFound(format!("{number} is not in the {market} pool")))?;
    Ok((entry.number, entry.version))
}

async fn write_number(
    store: &impl Store,
    vn: &PoolNumber,
    expected: Option<u64>,
) -> Result<Output, CliError> {
    match store.put_number_if(vn, expected).await {
        Ok(_) => Ok(Output {
            text: format!("{} is {}\n", vn.number, vn.state),
            json: number_json(vn),
            code: 0,
        }),
        Err(PoolWriteError::NumberChanged(n)) => Err(CliError::Failed(format!(
            "{n} changed while we wrote it (a pool refresh ran?): try again"
        ))),
        Err(e) => Err(CliError::Failed(e.to_string())),
    }
}

fn number_json(n: &PoolNumber) -> Value {
    json!({
        "number": n.number.as_str(),
        "market": n.market.as_str(),
        "state": n.state.as_str(),
        "provider": n.provider.as_str(),
        "capabilities": n.capabilities.iter().map(Capability::as_str).collect::<Vec<_>>(),
        "hold": n.hold.as_ref().map(|h| json!({
            "reason": h.reason.as_str(),
            "since": h.since,
            "until": h.until,
            "note": h.note.as_ref().map(|n| n.as_str()),
        })),
    })
}

const DLQ_ATTRIBUTES: [&str; 4] = [
    "vnmask_reason",
    "vnmask_detail",
    "vnmask_source_message_id",
    "vnmask_source_queue",
];

async fn dlq_list(
    sdk: &aws_config::SdkConfig,
    dlq_url: &str,
    max: usize,
) -> Result<Output, CliError> {
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let mut seen = std::collections::HashSet::new();
    let mut rows = Vec::new();
    while rows.len() < max {
        // Visibility 0: looking must not hide the messages from a replay or from other operators.
        let got = sqs
            .receive_message()
            .queue_url(dlq_url)
            .max_number_of_messages(10)
            .visibility_timeout(0)
            .message_attribute_names("All")
            .message_system_attribute_names(
                aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount,
            )
            .send()
            .await
            .map_err(sdk_error)?;
        let messages = got.messages.unwrap_or_default();
        let fresh: Vec<_> = messages
            .into_iter()
            .filter(|m| seen.insert(m.message_id.clone()))
            .collect();
        if fresh.is_empty() {
            break;
        }
        for m in fresh.into_iter().take(max - rows.len()) {
            let attrs = m.message_attributes.unwrap_or_default();
            let attr = |k: &str| attrs.get(k).and_then(|v| v.string_value.clone());
            // Only the order id is read from the body: the rest may hold real numbers.
            let order_id = m
                .body
                .as_deref()
                .and_then(|b| serde_json::from_str::<Value>(b).ok())
                .and_then(|v| v.get("order_id").and_then(Value::as_str).map(str::to_owned));
            let mut row = json!({"message_id": m.message_id, "order_id": order_id});
            for k in DLQ_ATTRIBUTES {
                row[k.trim_start_matches("vnmask_")] = json!(attr(k));
            }
            rows.push(row);
        }
    }
    let text = rows
        .iter()
        .map(|r| {
            format!(
                "{}  order={}  reason={}  {}\n",
                r["message_id"].as_str().unwrap_or("?"),
                r["order_id"].as_str().unwrap_or("?"),
                r["reason"].as_str().unwrap_or("-"),
                r["detail"].as_str().unwrap_or("")
            )
        })
        .collect::<String>();
    Ok(Output {
        text: if text.is_empty() {
            "the DLQ is empty\n".into()
        } else {
            text
        },
        json: rows.into(),
        code: 0,
    })
}

async fn dlq_replay(
    sdk: &aws_config::SdkConfig,
    dlq_url: &str,
    queue_url: &str,
    max: usize,
) -> Result<Output, CliError> {
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let mut replayed = Vec::new();
    while replayed.len() < max {
        let got = sqs
            .receive_message()
            .queue_url(dlq_url)
            .max_number_of_messages(10.min((max - replayed.len()) as i32))
            .visibility_timeout(60)
            .send()
            .await
            .map_err(sdk_error)?;
        let messages = got.messages.unwrap_or_default();
        if messages.is_empty() {
            break;
        }
        for m in messages {
            let body = m.body.unwrap_or_default();
            let mut send = sqs.send_message().queue_url(queue_url).message_body(&body);
            if queue_url.ends_with(".fifo") {
                let order = serde_json::from_str::<Value>(&body)
                    .ok()
                    .and_then(|v| v.get("order_id").and_then(Value::as_str).map(str::to_owned))
                    .unwrap_or_else(|| "unknown".into());
                send = send
                    .message_group_id(order)
                    .message_deduplication_id(m.message_id.clone().unwrap_or_default());
            }
            send.send().await.map_err(sdk_error)?;
            // Deleted only once it is back on the queue: a failure leaves it in the DLQ.
            sqs.delete_message()
                .queue_url(dlq_url)
                .receipt_handle(m.receipt_handle.unwrap_or_default())
                .send()
                .await
                .map_err(sdk_error)?;
            replayed.push(m.message_id.unwrap_or_default());
        }
    }
    Ok(Output {
        text: format!(
            "replayed {} message(s) to the order-events queue\n",
            replayed.len()
        ),
        json: json!({"replayed": replayed}),
        code: 0,
    })
}

async fn keys(sdk: &aws_config::SdkConfig, kms_key: &str, name: &str) -> Result<Output, CliError> {
    let kms = aws_sdk_kms::Client::new(sdk);
    let (hmac, data) = Vault::generate_wrapped_keys(&kms, kms_key, name).await?;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let (hmac, data) = (b64(&hmac), format!("{name}={}", b64(&data)));
    Ok(Output {
        text: format!(
            "HmacKeyCiphertext / VNMASK_HMAC_KEY:\n{hmac}\nDataKeysCiphertext / VNMASK_DATA_KEYS:\n{data}\n\
             sam deploy --parameter-overrides HmacKeyCiphertext={hmac} DataKeysCiphertext={data}\n"
        ),
        json: json!({"VNMASK_HMAC_KEY": hmac, "VNMASK_DATA_KEYS": data}),
        code: 0,
    })
}

/// Walks the whole table page by page within the read-unit budget, checks the pair invariant
/// at the instant the walk began, and reports the breaches that a fresh read still shows.
async fn audit(sdk: &aws_config::SdkConfig, args: &AuditArgs) -> Result<Output, CliError> {
    let store = store(sdk).await?;
    let began = vnmask::domain::now();
    let mut walk = Audit::new(began);
    let progress = std::io::stderr().is_terminal();
    let clock = Instant::now();
    let (mut pages, mut scanned, mut read_units) = (0u64, 0u64, 0f64);
    let mut from = None;
    let complete = loop {
        let page = store.audit_page(from, args.page_size, began).await?;
        pages += 1;
        scanned += page.scanned;
        read_units += page.read_units;
        page.routes.into_iter().for_each(|r| walk.add_route(r));
        page.sessions.into_iter().for_each(|s| walk.add_session(s));
        page.pins.into_iter().for_each(|p| walk.add_pin(p));
        if progress {
            eprint!("\raudit: {pages} pages, {scanned} items, {read_units:.1} read units");
        }
        let Some(next) = page.next else {
            break true;
        };
        if args
            .max_read_units
            .is_some_and(|cap| read_units >= cap as f64)
        {
            break false;
        }
        from = Some(next);
        tokio::time::sleep(pause(
            read_units,
            args.read_units_per_second,
            clock.elapsed(),
        ))
        .await;
    };
    if progress {
        eprintln!();
    }
    let mut json = json!({
        "complete": complete,
        "pages": pages,
        "scanned": scanned,
        "read_units": read_units,
        "live_routes": walk.live_routes(),
        "live_sessions": walk.live_sessions(),
        "live_pins": walk.live_pins(),
    });
    let mut text = format!(
        "scanned {scanned} items in {pages} page(s), {read_units:.1} read units\n\
         live routes {}, live sessions {}, live PINs {}\n",
        walk.live_routes(),
        walk.live_sessions(),
        walk.live_pins()
    );
    if !complete {
        // A partial walk sees routes without their partners: its suspects mean nothing.
        json["breaches"] = Value::Null;
        text += &format!(
            "incomplete: stopped at --max-read-units {}; the invariant was not checked\n",
            args.max_read_units.unwrap_or_default()
        );
        return Ok(Output {
            text,
            json,
            code: EXIT_INCOMPLETE,
        });
    }
    let suspects = walk.breaches();
    let breaches = vnmask::store::confirm(&store, &suspects, vnmask::domain::now()).await?;
    let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for b in &breaches {
        *by_kind.entry(b.kind()).or_default() += 1;
    }
    json["suspects"] = json!(suspects.len());
    json["breaches_by_kind"] = json!(by_kind);
    json["breaches"] = breaches.iter().map(breach_json).collect::<Vec<_>>().into();
    if breaches.is_empty() {
        text += "breaches: none\n";
    } else {
        let kinds: Vec<String> = by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
        text += &format!("breaches: {} ({})\n", breaches.len(), kinds.join(", "));
        for b in &breaches {
            text += &format!("  {b}\n");
        }
    }
    let code = if breaches.is_empty() {
        0
    } else {
        EXIT_BREACHES
    };
    Ok(Output { text, json, code })
}

/// A breach by kind, orders and virtual number: never a person.
fn breach_json(b: &Breach) -> Value {
    json!({
        "kind": b.kind(),
        "orders": b.orders().iter().map(|o| o.as_str()).collect::<Vec<_>>(),
        "virtual_number": b.number().as_str(),
    })
}

/// How long to wait so that `used` read units over the walk so far average at most
/// `per_second`, given that `elapsed` has passed since it began.
fn pause(used: f64, per_second: u32, elapsed: Duration) -> Duration {
    Duration::try_from_secs_f64(used / f64::from(per_second))
        .unwrap_or_default()
        .saturating_sub(elapsed)
}

/// Runs the CLI: prints the output (text or JSON) or the error, and returns the exit code.
pub async fn main_with(cli: Cli) -> ExitCode {
    let json = cli.json;
    match run(cli).await {
        Ok(out) if json => {
            println!("{}", out.json);
            ExitCode::from(out.code)
        }
        Ok(out) => {
            // One trailing newline, so that a script's next line starts on its own.
            println!("{}", out.text.trim_end_matches('\n'));
            ExitCode::from(out.code)
        }
        Err(e) => {
            if json {
                println!("{}", json!({"error": e.to_string()}));
            }
            eprintln!("vnctl: {e}");
            e.exit_code()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_audit_waits_until_its_reads_average_the_budget() {
        let s = Duration::from_secs;
        assert_eq!(pause(100.0, 50, s(0)), s(2));
        assert_eq!(pause(100.0, 50, s(1)), s(1));
        assert_eq!(pause(100.0, 50, s(3)), s(0), "behind the budget: no wait");
        assert_eq!(pause(0.0, 50, s(0)), s(0), "a store that counts no units");
    }
}
