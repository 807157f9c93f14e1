//! `tyk-gitops fleet status` and `fleet wait`: read every live replica's
//! status from Redis. Exit codes: 0 converged (or done waiting), 1 not
//! converged / timed out / rejected, 2 usage, 3 Redis unreachable.

use std::time::{Duration, Instant};

use serde_json::json;

use super::rollout::{Phase, Record};
use super::{
    FleetConfig, FleetError, Ignored, Progress, ReplicaStatus, Statuses, Verified, converged,
    duplicate_ids, lease_replica, progress, short,
};
use crate::exit::Exit;
use crate::flags::{FleetArgs, parse_duration};
use crate::sha::printable;
use crate::state::now;

/// How often `wait` looks again when no replica said its status changed
/// (a replica of an older version says nothing; a change missed while
/// the subscription was down).
const WAIT_POLL: Duration = Duration::from_millis(250);

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: FleetCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum FleetCommand {
    /// A table of live replicas; exits 0 iff all of them verified one commit.
    Status(StatusArgs),
    /// Blocks until every live replica verified --sha; exits 1 on timeout (naming the laggards) or as soon as a replica rejects it.
    Wait(WaitArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Human,
    Json,
}

/// The fleet's Redis: optional for `sync` and `run`, required here (the
/// status lives nowhere else), so `--help` shows it without brackets.
#[derive(Clone, clap::Args)]
pub struct FleetRedis {
    /// Redis URL the replicas report to (redis://[:password@]host:port[/db], rediss:// for TLS).
    #[arg(long = "redis", env = "TYK_GITOPS_REDIS")]
    pub redis: String,

    /// The fleet's name, as given to its replicas.
    #[arg(long, default_value = "default", env = "TYK_GITOPS_CLUSTER")]
    pub cluster: String,
}

/// By hand: the Redis URL may hold a password.
impl std::fmt::Debug for FleetRedis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetRedis")
            .field("redis", &crate::source::redact_url(&self.redis))
            .field("cluster", &self.cluster)
            .finish()
    }
}

impl FleetRedis {
    fn args(&self) -> FleetArgs {
        FleetArgs {
            redis: Some(self.redis.clone()),
            cluster: self.cluster.clone(),
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub fleet: FleetRedis,

    /// Output format.
    #[arg(long, value_enum, default_value = "human", env = "TYK_GITOPS_FORMAT")]
    pub format: Format,
}

#[derive(Debug, clap::Args)]
pub struct WaitArgs {
    #[command(flatten)]
    pub fleet: FleetRedis,

    /// The commit to wait for (full, or at least 7 leading digits).
    #[arg(long, env = "TYK_GITOPS_SHA")]
    pub sha: String,

    /// Give up after this long.
    #[arg(long, default_value = "120s", value_parser = parse_duration, env = "TYK_GITOPS_WAIT_TIMEOUT")]
    pub timeout: Duration,

    /// Also wait until at least this many replicas are live (a rollout scaling up).
    #[arg(long, default_value_t = 1, env = "TYK_GITOPS_MIN_REPLICAS")]
    pub min_replicas: usize,
}

pub fn run(args: Args) -> Exit {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return Exit::Local;
        }
    };
    match args.command {
        FleetCommand::Status(a) => runtime.block_on(status(a)),
        FleetCommand::Wait(a) => runtime.block_on(wait(a)),
    }
}

fn config(args: &FleetArgs) -> Result<FleetConfig, Exit> {
    match FleetConfig::from_args(args) {
        Ok(Some(c)) => Ok(c),
        Ok(None) => {
            eprintln!("error: --redis URL (or TYK_GITOPS_REDIS) is required");
            Err(Exit::Usage)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Err(Exit::Usage)
        }
    }
}

fn exit(e: &FleetError) -> Exit {
    match e {
        FleetError::Usage(_) => Exit::Usage,
        FleetError::Unreachable { .. } | FleetError::Command { .. } => Exit::Remote,
    }
}

/// Everything `status` shows, read in one go.
struct Snapshot {
    replicas: Vec<ReplicaStatus>,
    /// Entries under `replica:*` not trusted as a replica's status.
    ignored: Vec<Ignored>,
    verified: Option<Verified>,
    /// The lease holder's replica id.
    leader: Option<String>,
    rollout: Rollouts,
}

/// The staged rollouts (one per ref) and the live canaries.
#[derive(Debug, Default)]
struct Rollouts {
    records: Vec<Record>,
    /// Live canaries of each record's ref, in the same order.
    live: Vec<usize>,
    live_canaries: usize,
    /// Redis time, ms: for the time left in a hold.
    now: u64,
}

impl Rollouts {
    fn lines(&self) -> String {
        let mut out = String::new();
        for (r, live) in self.records.iter().zip(&self.live) {
            out.push_str(&r.describe(self.now));
            let on = r.canaries.values().filter(|c| c.sha == r.commit).count();
            if r.phase == Phase::Canary && *live > on {
                out.push_str(&format!(" ({on} of {live} live canaries run it)"));
            }
            out.push('\n');
        }
        if self.live_canaries == 0 && !self.records.is_empty() {
            out.push_str(&format!(
                "no live canary: replicas apply new commits as they come (an unfinished rollout holds them up to {} min for a canary to return)\n",
                super::rollout::ORPHAN_GRACE.as_secs() / 60
            ));
        }
        out
    }

    /// The failed rollout of `sha`, if any.
    fn failed(&self, sha: &str) -> Option<&Record> {
        self.records
            .iter()
            .find(|r| r.phase == Phase::Failed && super::same_sha(&r.commit, sha))
    }
}

async fn read_rollouts(
    config: &FleetConfig,
    con: &mut redis::aio::MultiplexedConnection,
) -> Result<Rollouts, FleetError> {
    let keys = config.keys();
    let mut names: Vec<String> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(keys.rollout_pattern())
            .arg("COUNT")
            .arg(100)
            .query_async(con)
            .await
            .map_err(|e| config.command_failed("SCAN", &e))?;
        names.extend(batch);
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    names.sort();
    names.dedup();
    let (secs, micros): (u64, u64) = redis::cmd("TIME")
        .query_async(con)
        .await
        .map_err(|e| config.command_failed("TIME", &e))?;
    let now = secs * 1000 + micros / 1000;
    let mut records: Vec<Record> = Vec::new();
    if !names.is_empty() {
        let values: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&names)
            .query_async(con)
            .await
            .map_err(|e| config.command_failed("MGET", &e))?;
        records = values
            .into_iter()
            .flatten()
            .filter_map(|v| serde_json::from_str::<Record>(&v).ok())
            .collect();
    }
    let mut live = Vec::new();
    for r in &records {
        let n: usize = redis::cmd("ZCOUNT")
            .arg(keys.canaries(&r.git_ref))
            .arg(now.saturating_sub(super::rollout::CANARY_TTL.as_millis() as u64))
            .arg("+inf")
            .query_async(con)
            .await
            .map_err(|e| config.command_failed("ZCOUNT", &e))?;
        live.push(n);
    }
    Ok(Rollouts {
        records,
        live_canaries: live.iter().sum(),
        live,
        now,
    })
}

async fn snapshot(config: &FleetConfig) -> Result<Snapshot, FleetError> {
    let mut con = config.connect().await?;
    let Statuses { replicas, ignored } = super::read_statuses(config, &mut con).await?;
    let keys = config.keys();
    let (verified, leader): (Option<String>, Option<String>) = redis::cmd("MGET")
        .arg(keys.verified())
        .arg(keys.leader())
        .query_async(&mut con)
        .await
        .map_err(|e| config.command_failed("MGET", &e))?;
    let rollout = read_rollouts(config, &mut con).await?;
    Ok(Snapshot {
        replicas,
        ignored,
        verified: verified.and_then(|v| serde_json::from_str(&v).ok()),
        leader: leader.map(|l| lease_replica(&l).to_string()),
        rollout,
    })
}

async fn status(args: StatusArgs) -> Exit {
    let config = match config(&args.fleet.args()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let snap = match snapshot(&config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return exit(&e);
        }
    };
    let agreed = converged(&snap.replicas).map(str::to_string);
    let duplicates = duplicate_ids(&snap.replicas);
    match args.format {
        Format::Json => println!(
            "{}",
            json!({
                "cluster": config.cluster,
                "converged": agreed.is_some(),
                "sha": agreed,
                "verified": snap.verified,
                "leader": snap.leader,
                "replicas": snap.replicas,
                "duplicate_ids": duplicates,
                "ignored": snap.ignored,
                "live_canaries": snap.rollout.live_canaries,
                "rollouts": snap.rollout.records.iter().map(|r| json!({
                    "commit": r.commit,
                    "ref": r.git_ref,
                    "phase": r.phase,
                    "hold_left_ms": r.hold_left(snap.rollout.now),
                    "canaries": r.canary_names(),
                    "reason": r.reason,
                    "by": r.by,
                })).collect::<Vec<_>>(),
            })
        ),
        Format::Human => print!(
            "{}",
            table(&config.cluster, &snap, agreed.as_deref(), now())
        ),
    }
    Exit::refused_if(agreed.is_none())
}

fn table(cluster: &str, snap: &Snapshot, agreed: Option<&str>, now: u64) -> String {
    let mut rows = vec![[
        "REPLICA".to_string(),
        "SHA".into(),
        "VERIFIED".into(),
        "APIS".into(),
        "POLICIES".into(),
        "AGE".into(),
        "ERROR".into(),
    ]];
    let duplicates = duplicate_ids(&snap.replicas);
    for r in &snap.replicas {
        let mut name = printable(&r.replica);
        // Two sidecars under one name: tell them apart by process.
        if duplicates.contains(&r.replica.as_str()) {
            name.push_str(&format!(" !{}", short_instance(&r.instance)));
        }
        if r.leader {
            name.push_str(" *");
        }
        if r.canary {
            name.push_str(" [canary]");
        }
        rows.push([
            name,
            r.sha.as_deref().map_or("-", short).to_string(),
            if r.verified { "yes" } else { "no" }.into(),
            r.apis.to_string(),
            r.policies.to_string(),
            format!("{}s", now.saturating_sub(r.updated_at)),
            r.error.as_deref().map(printable).unwrap_or_default(),
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    let verified = snap.verified.as_ref().map_or("none".to_string(), |v| {
        format!(
            "{} ({}, by {})",
            printable(short(&v.sha)),
            printable(&v.git_ref),
            printable(&v.replica)
        )
    });
    out.push_str(&format!(
        "\ncluster {cluster}: {} replica(s); fleet verified commit: {verified}; {}\n",
        snap.replicas.len(),
        match (agreed, snap.replicas.is_empty()) {
            (_, true) => "no live replica".to_string(),
            (Some(sha), _) => format!("converged on {}", short(sha)),
            (None, _) => "not converged".to_string(),
        }
    ));
    if snap.leader.is_some() {
        out.push_str("(* polls Git for the fleet)\n");
    }
    if !duplicates.is_empty() {
        out.push_str(&format!(
            "(! replica id used by more than one sidecar, shown with its process id: {}; \
             give each its own --replica-id)\n",
            duplicates
                .iter()
                .map(|d| printable(d))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    out.push_str(&snap.rollout.lines());
    out.push_str(&ignored_lines(&snap.ignored));
    out
}

/// The entries not counted, one per line, so a reader sees what was left
/// out and why.
fn ignored_lines(ignored: &[Ignored]) -> String {
    let mut out = String::new();
    if !ignored.is_empty() {
        out.push_str(&format!(
            "not counted: {} entr{} that no replica wrote:\n",
            ignored.len(),
            if ignored.len() == 1 { "y" } else { "ies" }
        ));
    }
    for i in ignored {
        out.push_str(&format!("  {}: {}\n", i.key, i.reason));
    }
    out
}

/// The first characters of a process id from Redis, printable (it may be
/// anything: cut on characters, never inside one).
fn short_instance(instance: &str) -> String {
    printable(instance).chars().take(8).collect()
}

async fn wait(args: WaitArgs) -> Exit {
    let config = match config(&args.fleet.args()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if args.sha.trim().len() < 7 || !args.sha.trim().chars().all(|c| c.is_ascii_hexdigit()) {
        eprintln!("error: --sha {:?}: give at least 7 hex digits", args.sha);
        return Exit::Usage;
    }
    let deadline = Instant::now() + args.timeout;
    // Redis trouble mid-wait is retried until the deadline; a Redis never
    // reached at all is exit 3.
    let mut reached = false;
    let mut last_error = None;
    let mut last = None;
    // Subscribed before the first look, so no change falls between.
    let mut changes = status_changes(&config).await;
    let mut con = None;
    loop {
        match snapshot_replicas(&config, &mut con).await {
            Ok((Statuses { replicas, ignored }, rollout)) => {
                reached = true;
                if let Some(r) = rollout.failed(&args.sha) {
                    eprintln!(
                        "{} failed its staged rollout on canary {}: {}; the other replicas will not apply it",
                        short(args.sha.trim()),
                        printable(r.by.as_deref().unwrap_or("(unknown)")),
                        printable(r.reason.as_deref().unwrap_or("no reason given"))
                    );
                    return Exit::Refused;
                }
                match progress(&replicas, &args.sha, args.min_replicas) {
                    Progress::Done => {
                        // What was counted, by name, and what was not.
                        let names: Vec<String> =
                            replicas.iter().map(|r| printable(&r.replica)).collect();
                        println!(
                            "{} replica(s) verified {}: {}",
                            replicas.len(),
                            short(args.sha.trim()),
                            names.join(", ")
                        );
                        eprint!("{}", ignored_lines(&ignored));
                        return Exit::Ok;
                    }
                    Progress::Rejected(r) => {
                        eprintln!(
                            "{} rejected {}: {}",
                            printable(&r.replica),
                            short(args.sha.trim()),
                            r.describe()
                        );
                        return Exit::Refused;
                    }
                    waiting => last = Some((waiting, ignored)),
                }
            }
            Err(e) => last_error = Some(e),
        }
        if Instant::now() >= deadline {
            break;
        }
        let pause = WAIT_POLL.min(deadline.saturating_duration_since(Instant::now()));
        next_change(&mut changes, pause).await;
    }
    if !reached && let Some(e) = last_error {
        eprintln!("error: {e}");
        return exit(&e);
    }
    eprint!("{}", timed_out(&args, last));
    Exit::Refused
}

/// Every status and rollout, on the connection of the previous look
/// (connecting when there is none; dropped after a failure).
async fn snapshot_replicas(
    config: &FleetConfig,
    con: &mut Option<redis::aio::MultiplexedConnection>,
) -> Result<(Statuses, Rollouts), FleetError> {
    let mut connection = match con.take() {
        Some(c) => c,
        None => config.connect().await?,
    };
    let statuses = super::read_statuses(config, &mut connection).await?;
    let rollouts = read_rollouts(config, &mut connection).await?;
    *con = Some(connection);
    Ok((statuses, rollouts))
}

type Changes = std::pin::Pin<Box<redis::aio::PubSubStream>>;

/// The replicas' status changes (`Keys::status_changes`); `None` when the
/// subscription cannot be made, and `wait` only polls.
async fn status_changes(config: &FleetConfig) -> Option<Changes> {
    let mut pubsub = config.pubsub().await.ok()?;
    let channel = config.keys().status_changes();
    match tokio::time::timeout(super::REDIS_TIMEOUT, pubsub.subscribe(&channel)).await {
        Ok(Ok(())) => Some(Box::pin(pubsub.into_on_message())),
        _ => None,
    }
}

/// Until a replica says its status changed, or `pause` passed. A burst of
/// changes (every replica verifying one push) makes one look, not one
/// each.
async fn next_change(changes: &mut Option<Changes>, pause: Duration) {
    use futures_util::{FutureExt, StreamExt};
    let Some(stream) = changes.as_mut() else {
        tokio::time::sleep(pause).await;
        return;
    };
    tokio::select! {
        message = stream.next() => {
            if message.is_none() {
                // The subscription is gone: poll from now on.
                *changes = None;
                return;
            }
            while let Some(Some(_)) = stream.next().now_or_never() {}
        }
        _ = tokio::time::sleep(pause) => {}
    }
}

fn timed_out(args: &WaitArgs, last: Option<(Progress, Vec<Ignored>)>) -> String {
    let mut out = format!(
        "timed out after {} waiting for {}",
        humantime::format_duration(args.timeout),
        short(args.sha.trim())
    );
    let (last, ignored) = match last {
        Some((progress, ignored)) => (Some(progress), ignored),
        None => (None, Vec::new()),
    };
    match last {
        Some(Progress::Waiting { laggards, live }) => {
            if live < args.min_replicas {
                out.push_str(&format!(
                    "; {live} replica(s) live, {} wanted",
                    args.min_replicas
                ));
            }
            if live == 0 {
                out.push_str("; no live replica");
            }
            out.push('\n');
            for l in laggards {
                out.push_str(&format!("  {}\n", l.describe()));
            }
        }
        _ => out.push('\n'),
    }
    out.push_str(&ignored_lines(&ignored));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(id: &str, sha: &str, verified: bool, leader: bool) -> ReplicaStatus {
        ReplicaStatus {
            replica: id.into(),
            instance: format!("{id}-0123456789"),
            sha: Some(sha.into()),
            git_ref: Some("main".into()),
            verified,
            apis: 2,
            policies: 1,
            error: (!verified).then(|| "gateway down".to_string()),
            updated_at: 100,
            rejected: vec![],
            leader,
            canary: false,
        }
    }

    #[test]
    fn the_table_lines_up_and_names_the_leader_and_the_verdict() {
        let sha = "0123456789abcdef0123456789abcdef01234567";
        let snap = Snapshot {
            replicas: vec![
                replica("gw-0", sha, true, true),
                replica("gateway-1", sha, false, false),
            ],
            ignored: vec![],
            verified: None,
            leader: Some("gw-0".into()),
            rollout: Rollouts::default(),
        };
        let text = table("prod", &snap, None, 103);
        let expected = "\
REPLICA    SHA           VERIFIED  APIS  POLICIES  AGE  ERROR
gw-0 *     0123456789ab  yes       2     1         3s
gateway-1  0123456789ab  no        2     1         3s   gateway down

cluster prod: 2 replica(s); fleet verified commit: none; not converged
(* polls Git for the fleet)
";
        assert_eq!(text, expected);
    }

    #[test]
    fn the_table_marks_sidecars_sharing_a_replica_id() {
        let sha = "0123456789abcdef0123456789abcdef01234567";
        let mut twin = replica("gw-0", sha, true, false);
        twin.instance = "fedcba9876543210".into();
        let snap = Snapshot {
            replicas: vec![
                replica("gw-0", sha, true, true),
                twin,
                replica("gw-1", sha, true, false),
            ],
            verified: None,
            leader: Some("gw-0".into()),
            ignored: vec![],
            rollout: Rollouts::default(),
        };
        let text = table("prod", &snap, Some(sha), 103);
        let expected = "\
REPLICA           SHA           VERIFIED  APIS  POLICIES  AGE  ERROR
gw-0 !gw-0-012 *  0123456789ab  yes       2     1         3s
gw-0 !fedcba98    0123456789ab  yes       2     1         3s
gw-1              0123456789ab  yes       2     1         3s

cluster prod: 3 replica(s); fleet verified commit: none; converged on 0123456789ab
(* polls Git for the fleet)
(! replica id used by more than one sidecar, shown with its process id: gw-0; give each its own --replica-id)
";
        assert_eq!(text, expected);
    }

    #[test]
    fn rollouts_show_phase_time_left_canaries_and_who_failed_and_why() {
        use super::super::rollout::CanaryEntry;
        let sha = "0123456789abcdef0123456789abcdef01234567";
        let mut holding = Record {
            commit: sha.into(),
            git_ref: "main".into(),
            phase: Phase::Canary,
            since: 10_000,
            hold_ms: 60_000,
            seen: 10_000,
            canaries: [(
                "7f".to_string(),
                CanaryEntry {
                    replica: "gw-c".into(),
                    sha: sha.into(),
                    at: 10_000,
                },
            )]
            .into(),
            reason: None,
            by: None,
        };
        let mut rollouts = Rollouts {
            records: vec![holding.clone()],
            live: vec![2],
            live_canaries: 2,
            now: 25_500,
        };
        assert_eq!(
            rollouts.lines(),
            "rollout of 0123456789ab (main): canary; canaries: gw-c (1 of 2 live canaries run it)\n"
        );
        holding.phase = Phase::Holding;
        rollouts.records = vec![holding.clone()];
        assert_eq!(
            rollouts.lines(),
            "rollout of 0123456789ab (main): holding, 45s left of the hold; canaries: gw-c\n"
        );
        holding.phase = Phase::Failed;
        holding.by = Some("gw-c".into());
        holding.reason = Some("canary check http://gw/shop answered 502 Bad Gateway".into());
        rollouts.records = vec![holding];
        rollouts.live = vec![0];
        rollouts.live_canaries = 0;
        assert_eq!(
            rollouts.lines(),
            "rollout of 0123456789ab (main): failed on gw-c: canary check http://gw/shop answered 502 Bad Gateway; canaries: gw-c\n\
             no live canary: replicas apply new commits as they come (an unfinished rollout holds them up to 10 min for a canary to return)\n"
        );
        assert!(rollouts.failed("0123456").is_some());
        assert!(rollouts.failed("fedcba9").is_none());
    }

    #[test]
    fn a_timeout_names_each_laggard_and_a_missing_replica_count() {
        let args = WaitArgs {
            fleet: FleetRedis {
                redis: String::new(),
                cluster: "c".into(),
            },
            sha: "bbbbbbbb".into(),
            timeout: Duration::from_secs(5),
            min_replicas: 3,
        };
        let lag = replica("gw-1", "aaaaaaaaaaaaaaaa", false, false);
        let text = timed_out(
            &args,
            Some((
                Progress::Waiting {
                    laggards: vec![lag],
                    live: 2,
                },
                vec![],
            )),
        );
        assert_eq!(
            text,
            "timed out after 5s waiting for bbbbbbbb; 2 replica(s) live, 3 wanted\n  gw-1: on aaaaaaaaaaaa (not verified); last error: gateway down\n"
        );
    }
}
