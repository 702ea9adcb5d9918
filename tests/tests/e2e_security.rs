//! Signed envelopes and acks, end to end with the real binaries and a real Mosquitto: keys made
//! by `threadline-aggregator keygen`, a gateway with `[mqtt] signing_key_file` producing
//! synthetic records, an aggregator (SQLite) with `[mqtt] gateway_keys_dir`. Forgeries are
//! published with `mosquitto_pub`, as an intruder on the broker would.
//!
//! - forged acks (unsigned, signed with another key, a correctly signed one of another epoch)
//!   delete nothing: the outbox depth (`buffer stats`) stays, the gateway counts them, and once
//!   the aggregator runs every record arrives exactly once;
//! - forged envelopes (unsigned, badly signed) are dead-lettered `bad signature`, the chain and
//!   the stored records stay as they were and `verify` passes.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use sqlx::Row as _;
use threadline_e2e::{Bins, Mosquitto, Proc, binaries, free_port, wait_for};
use threadline_shared::signing::{KeyRing, Purpose, generate_key};

const TOTAL: u64 = 600;
const GW: &str = "gw-sec";
const ACK_TOPIC: &str = "threadline/v1/plant-s/line-s/gw-sec/ack";
const RECORDS_TOPIC: &str = "threadline/v1/plant-s/line-s/gw-sec/records";

struct Env {
    dir: tempfile::TempDir,
    bins: Bins,
    broker: Mosquitto,
    gw_cfg: PathBuf,
    agg_cfg: PathBuf,
    health: String,
    key_file: PathBuf,
}

impl Env {
    async fn start() -> Result<Option<Env>> {
        if !Mosquitto::available() || which("mosquitto_pub").is_none() {
            eprintln!("SKIP: mosquitto or mosquitto_pub not installed");
            return Ok(None);
        }
        let bins = binaries()?;
        let dir = tempfile::tempdir()?;
        let broker = Mosquitto::start().await;
        let keys = dir.path().join("keys");
        let out = Command::new(&bins.aggregator)
            .args(["keygen", "--gateway", GW, "--dir"])
            .arg(&keys)
            .output()?;
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() || !said.contains("signing_key_file") {
            bail!(
                "keygen failed: {said}{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let key_file = keys.join(format!("{GW}.key"));
        let health = format!("127.0.0.1:{}", free_port());
        let gw_cfg = dir.path().join("gw.toml");
        std::fs::write(
            &gw_cfg,
            format!(
                "[gateway]\nid = \"{GW}\"\nplant = \"plant-s\"\nline = \"line-s\"\ndata_dir = \"{}\"\n\n\
                 [mqtt]\nurl = \"{}\"\nsigning_key_file = \"{}\"\nack_timeout_ms = 1000\n\n\
                 [health]\nlisten = \"{health}\"\n",
                dir.path().join("gw-data").display(),
                broker.url(),
                key_file.display()
            ),
        )?;
        let agg_cfg = dir.path().join("agg.toml");
        std::fs::write(
            &agg_cfg,
            format!(
                "[aggregator]\nid = \"agg-sec\"\nbatch_max_wait_ms = 20\n\n\
                 [mqtt]\nurl = \"{}\"\ngateway_keys_dir = \"{}\"\n\n\
                 [database]\nurl = \"sqlite://{}\"\n\n[http]\nlisten = \"127.0.0.1:{}\"\n",
                broker.url(),
                keys.display(),
                dir.path().join("agg.db").display(),
                free_port()
            ),
        )?;
        Ok(Some(Env {
            dir,
            bins,
            broker,
            gw_cfg,
            agg_cfg,
            health,
            key_file,
        }))
    }

    fn gateway(&self) -> Result<Proc> {
        let total = TOTAL.to_string();
        let cfg = self.gw_cfg.to_string_lossy().into_owned();
        Proc::start(
            "gateway",
            self.dir.path(),
            &self.bins.gateway,
            &[
                "run",
                "--config",
                &cfg,
                "--synthetic-rate",
                "2000",
                "--synthetic-event-every",
                "5",
                "--synthetic-total",
                &total,
            ],
        )
    }

    fn aggregator(&self) -> Result<Proc> {
        let cfg = self.agg_cfg.to_string_lossy().into_owned();
        Proc::start(
            "aggregator",
            self.dir.path(),
            &self.bins.aggregator,
            &["run", "--config", &cfg],
        )
    }

    /// `threadline-gateway buffer stats`: (epoch, depth).
    fn buffer_stats(&self) -> Result<(String, u64)> {
        let out = Command::new(&self.bins.gateway)
            .args(["buffer", "stats", "--config"])
            .arg(&self.gw_cfg)
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_owned())
        };
        let epoch = field("epoch:").context("no epoch in buffer stats")?;
        let depth = field("depth:")
            .and_then(|d| d.split_whitespace().next().and_then(|n| n.parse().ok()))
            .with_context(|| format!("no depth in buffer stats: {text}"))?;
        Ok((epoch, depth))
    }

    async fn gateway_metric(&self, name: &str) -> Option<f64> {
        let text = reqwest::get(format!("http://{}/metrics", self.health))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
    }

    fn publish(&self, topic: &str, payload: &[u8]) -> Result<()> {
        let file = self.dir.path().join("forged.bin");
        std::fs::write(&file, payload)?;
        let st = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &self.broker.port.to_string()])
            .args(["-q", "1", "-t", topic, "-f"])
            .arg(&file)
            .status()?;
        if !st.success() {
            bail!("mosquitto_pub failed: {st}");
        }
        Ok(())
    }

    async fn db(&self) -> Result<sqlx::SqlitePool> {
        let url = format!("sqlite://{}", self.dir.path().join("agg.db").display());
        Ok(sqlx::SqlitePool::connect(&url).await?)
    }
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(bin))
            .find(|f| f.is_file())
    })
}

/// Stored records of the gateway: (events, readings, distinct (epoch, seq)).
async fn stored(pool: &sqlx::SqlitePool) -> Result<(i64, i64, i64)> {
    let row = sqlx::query(
        "SELECT (SELECT count(*) FROM events WHERE gateway = ?1), \
                (SELECT count(*) FROM readings WHERE gateway = ?1), \
                (SELECT count(*) FROM (SELECT epoch, seq FROM events WHERE gateway = ?1 \
                 UNION SELECT epoch, seq FROM readings WHERE gateway = ?1))",
    )
    .bind(GW)
    .fetch_one(pool)
    .await?;
    Ok((row.get(0), row.get(1), row.get(2)))
}

async fn wait_depth(env: &Env, what: &str, want: u64) -> Result<()> {
    wait_for(what, Duration::from_secs(30), || async {
        env.buffer_stats().ok().filter(|(_, d)| *d == want)
    })
    .await
    .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_acks_delete_nothing_and_every_record_arrives_once() -> Result<()> {
    let Some(env) = Env::start().await? else {
        return Ok(());
    };
    // The aggregator is down: the records wait in the outbox.
    let mut gw = env.gateway()?;
    wait_depth(&env, "all records in the outbox", TOTAL)
        .await
        .with_context(|| gw.output())?;
    wait_for("gateway metrics", Duration::from_secs(20), || async {
        env.gateway_metric("threadline_mqtt_connected ")
            .await
            .filter(|v| *v == 1.0)
    })
    .await?;
    let (epoch, _) = env.buffer_stats()?;
    let everything = format!(r#"{{"epoch":"{epoch}","ranges":[[0,18446744073709551615]]}}"#);
    // 1. unsigned, 2. signed with another key, 3. signed with the right key but for another
    // epoch (a replay from before the outbox was re-created).
    env.publish(ACK_TOPIC, everything.as_bytes())?;
    let stranger =
        KeyRing::parse(&generate_key().map_err(anyhow::Error::msg)?).map_err(anyhow::Error::msg)?;
    env.publish(
        ACK_TOPIC,
        &stranger.sign(Purpose::Ack, GW, everything.as_bytes()),
    )?;
    let ours = KeyRing::read(&[env.key_file.as_path()]).map_err(anyhow::Error::msg)?;
    let other_epoch = format!(
        r#"{{"epoch":"{}","ranges":[[0,18446744073709551615]]}}"#,
        uuid::Uuid::new_v4()
    );
    env.publish(
        ACK_TOPIC,
        &ours.sign(Purpose::Ack, GW, other_epoch.as_bytes()),
    )?;
    // An envelope-signature on an ack (domain separation) is refused too.
    env.publish(
        ACK_TOPIC,
        &ours.sign(Purpose::Envelope, GW, everything.as_bytes()),
    )?;
    wait_for("three acks rejected", Duration::from_secs(20), || async {
        env.gateway_metric("threadline_gateway_acks_rejected_total ")
            .await
            .filter(|v| *v >= 3.0)
    })
    .await
    .with_context(|| gw.output())?;
    wait_for("the replayed ack seen", Duration::from_secs(20), || async {
        env.gateway_metric("threadline_publish_acks_total ")
            .await
            .filter(|v| *v >= 1.0)
    })
    .await?;
    let (_, depth) = env.buffer_stats()?;
    assert_eq!(depth, TOTAL, "a forged or replayed ack deleted records");
    assert!(
        gw.output().matches("ignoring an ack that is").count() == 1,
        "rejections are logged once a minute:\n{}",
        gw.output()
    );

    // The aggregator comes: every record arrives once, the outbox empties.
    let mut agg = env.aggregator()?;
    wait_depth(&env, "outbox emptied by signed acks", 0)
        .await
        .with_context(|| format!("{}\n{}", gw.output(), agg.output()))?;
    let pool = env.db().await?;
    let (events, readings, distinct) = stored(&pool).await?;
    assert_eq!(events + readings, TOTAL as i64);
    assert_eq!(distinct, TOTAL as i64);
    assert_eq!(events, (TOTAL / 5) as i64);
    let dead: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters")
        .fetch_one(&pool)
        .await?;
    assert_eq!(dead, 0, "{}", agg.output());
    gw.terminate(Duration::from_secs(10));
    agg.terminate(Duration::from_secs(10));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_records_are_dead_lettered_and_the_chain_is_unchanged() -> Result<()> {
    let Some(env) = Env::start().await? else {
        return Ok(());
    };
    let mut agg = env.aggregator()?;
    let mut gw = env.gateway()?;
    wait_depth(&env, "everything delivered and acked", 0)
        .await
        .with_context(|| format!("{}\n{}", gw.output(), agg.output()))?;
    let pool = env.db().await?;
    wait_for("all stored", Duration::from_secs(20), || async {
        stored(&pool)
            .await
            .ok()
            .filter(|(e, r, _)| e + r == TOTAL as i64)
    })
    .await?;
    let head = || async {
        sqlx::query_scalar::<_, Vec<u8>>(
            "SELECT hash FROM events WHERE gateway = ? ORDER BY id DESC LIMIT 1",
        )
        .bind(GW)
        .fetch_one(&pool)
        .await
    };
    let before = head().await?;
    let (epoch, _) = env.buffer_stats()?;
    // Records the gateway never produced, on its topic, with its epoch and the next seqs.
    let forged = |seq: u64| {
        format!(
            r#"{{"v":1,"gateway":"{GW}","plant":"plant-s","line":"line-s","epoch":"{epoch}","records":[{{"seq":{seq},"ts":"2026-12-01T10:00:00Z","type":"shipped","unit":"FAKE-1","shipment":"SH-X","customer":"Mallory"}}]}}"#
        )
    };
    env.publish(RECORDS_TOPIC, forged(TOTAL + 1).as_bytes())?;
    let stranger =
        KeyRing::parse(&generate_key().map_err(anyhow::Error::msg)?).map_err(anyhow::Error::msg)?;
    env.publish(
        RECORDS_TOPIC,
        &stranger.sign(Purpose::Envelope, GW, forged(TOTAL + 2).as_bytes()),
    )?;
    let reasons: Vec<String> = wait_for("two dead letters", Duration::from_secs(20), || async {
        let r: Vec<String> =
            sqlx::query_scalar("SELECT reason FROM dead_letters WHERE kind = 'bad_signature'")
                .fetch_all(&pool)
                .await
                .ok()?;
        (r.len() == 2).then_some(r)
    })
    .await
    .with_context(|| agg.output())?;
    assert!(
        reasons.iter().all(|r| r.starts_with("bad signature")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("unsigned")),
        "{reasons:?}"
    );
    assert_eq!(head().await?, before, "the chain moved");
    let (events, readings, _) = stored(&pool).await?;
    assert_eq!(events + readings, TOTAL as i64);
    let fake: i64 = sqlx::query_scalar("SELECT count(*) FROM items WHERE ext_id = 'FAKE-1'")
        .fetch_one(&pool)
        .await
        .unwrap_or(0);
    assert_eq!(fake, 0);
    let verify = Command::new(&env.bins.aggregator)
        .args(["verify", "--config"])
        .arg(&env.agg_cfg)
        .output()?;
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    // An operator replaying every dead letter must not let the forgeries in.
    let replay = Command::new(&env.bins.aggregator)
        .args(["dead-letters", "replay", "--all", "--config"])
        .arg(&env.agg_cfg)
        .output()?;
    assert_eq!(replay.status.code(), Some(1), "{replay:?}");
    let kept: Vec<String> =
        sqlx::query_scalar("SELECT reason FROM dead_letters WHERE kind = 'bad_signature'")
            .fetch_all(&pool)
            .await?;
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(
        kept.iter().all(|r| r.contains("never replayed")),
        "{kept:?}"
    );
    assert_eq!(head().await?, before, "replay moved the chain");
    let fake: i64 = sqlx::query_scalar("SELECT count(*) FROM items WHERE ext_id = 'FAKE-1'")
        .fetch_one(&pool)
        .await
        .unwrap_or(0);
    assert_eq!(fake, 0, "a replayed forgery entered the genealogy");
    gw.terminate(Duration::from_secs(10));
    agg.terminate(Duration::from_secs(10));
    Ok(())
}

/// Logs in to an MQTT 3.1.1 broker with a raw CONNECT (`login` = user and password, or
/// anonymous) and says whether it answered CONNACK "accepted". A broker that refuses may answer
/// a CONNACK with a refusal code or just close the connection (rumqttd does the latter).
async fn mqtt_login(addr: &str, login: Option<(&str, &str)>) -> Result<bool> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    fn field(out: &mut Vec<u8>, b: &[u8]) {
        out.extend_from_slice(&u16::try_from(b.len()).unwrap_or(u16::MAX).to_be_bytes());
        out.extend_from_slice(b);
    }
    let mut body = Vec::new();
    field(&mut body, b"MQTT");
    body.push(4); // protocol level 3.1.1
    body.push(0x02 | if login.is_some() { 0xC0 } else { 0 }); // clean session, user, password
    body.extend_from_slice(&30u16.to_be_bytes()); // keep-alive
    field(
        &mut body,
        format!("probe-{}", uuid::Uuid::new_v4().simple()).as_bytes(),
    );
    if let Some((user, password)) = login {
        field(&mut body, user.as_bytes());
        field(&mut body, password.as_bytes());
    }
    let mut packet = vec![0x10];
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        packet.push(byte);
        if len == 0 {
            break;
        }
    }
    packet.extend_from_slice(&body);
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(&packet).await?;
    let mut ack = [0u8; 4];
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut ack))
        .await
        .context("no answer to CONNECT within 10 s")?;
    Ok(match read {
        Ok(_) => ack[0] == 0x20 && ack[1] == 2 && ack[3] == 0,
        // Closed without a CONNACK: refused.
        Err(_) => false,
    })
}

/// The embedded broker (`[mqtt] embedded = true`) with `broker_password_file` written by
/// `mosquitto_passwd`: an anonymous client, a wrong password and an unknown user get no
/// accepted CONNACK; the right password does; and the real gateway logging in with
/// `username` / `password_file` delivers every record through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_broker_admits_only_its_users_and_a_gateway_with_credentials_delivers()
-> Result<()> {
    if which("mosquitto_passwd").is_none() {
        threadline_e2e::skip_or_fail("mosquitto_passwd (package mosquitto) not installed");
        return Ok(());
    }
    let bins = binaries()?;
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let passwd = d.join("broker.passwd");
    let made = Command::new("mosquitto_passwd")
        .args(["-c", "-b"])
        .arg(&passwd)
        .args([GW, "gw-pass-1"])
        .output()?;
    assert!(made.status.success(), "{made:?}");
    let made = Command::new("mosquitto_passwd")
        .args(["-H", "sha512", "-b"])
        .arg(&passwd)
        .args(["gw-old", "old-pass"])
        .output()?;
    assert!(made.status.success(), "{made:?}");
    let broker = format!("127.0.0.1:{}", free_port());
    let agg_cfg = d.join("agg.toml");
    std::fs::write(
        &agg_cfg,
        format!(
            "[aggregator]\nid = \"agg-emb\"\nbatch_max_wait_ms = 20\n\n\
             [mqtt]\nembedded = true\nlisten = \"{broker}\"\nbroker_password_file = \"{}\"\n\n\
             [database]\nurl = \"sqlite://{}\"\n\n[http]\nlisten = \"127.0.0.1:{}\"\n",
            passwd.display(),
            d.join("agg.db").display(),
            free_port()
        ),
    )?;
    // Without either key the aggregator refuses to start (anyone could log in).
    let open = d.join("open.toml");
    std::fs::write(
        &open,
        std::fs::read_to_string(&agg_cfg)?.replace(
            &format!("broker_password_file = \"{}\"\n", passwd.display()),
            "",
        ),
    )?;
    let refused = Command::new(&bins.aggregator)
        .args(["check", "--config"])
        .arg(&open)
        .output()?;
    let said = String::from_utf8_lossy(&refused.stderr).into_owned();
    assert!(
        !refused.status.success()
            && said.contains("mqtt.embedded")
            && said.contains("allow_anonymous = true"),
        "{refused:?}"
    );
    let mut agg = Proc::start(
        "aggregator",
        d,
        &bins.aggregator,
        &["run", "--config", &agg_cfg.to_string_lossy()],
    )?;
    wait_for("the embedded broker", Duration::from_secs(30), || async {
        tokio::net::TcpStream::connect(&broker).await.ok()
    })
    .await
    .with_context(|| agg.output())?;
    assert!(!mqtt_login(&broker, None).await?, "anonymous accepted");
    assert!(
        !mqtt_login(&broker, Some((GW, "gw-pass-2"))).await?,
        "wrong password accepted"
    );
    assert!(
        !mqtt_login(&broker, Some(("gw-nobody", "gw-pass-1"))).await?,
        "unknown user accepted"
    );
    assert!(
        mqtt_login(&broker, Some((GW, "gw-pass-1"))).await?,
        "the right password was refused: {}",
        agg.output()
    );
    assert!(
        mqtt_login(&broker, Some(("gw-old", "old-pass"))).await?,
        "a $6$ (sha512) line was refused"
    );

    let pass = d.join("gw.pass");
    std::fs::write(&pass, "gw-pass-1\n")?;
    let gw_cfg = d.join("gw.toml");
    std::fs::write(
        &gw_cfg,
        format!(
            "[gateway]\nid = \"{GW}\"\nplant = \"plant-s\"\nline = \"line-s\"\ndata_dir = \"{}\"\n\n\
             [mqtt]\nurl = \"mqtt://{broker}\"\nusername = \"{GW}\"\npassword_file = \"{}\"\n\
             ack_timeout_ms = 1000\n\n[health]\nlisten = \"127.0.0.1:{}\"\n",
            d.join("gw-data").display(),
            pass.display(),
            free_port()
        ),
    )?;
    let total = TOTAL.to_string();
    let mut gw = Proc::start(
        "gateway",
        d,
        &bins.gateway,
        &[
            "run",
            "--config",
            &gw_cfg.to_string_lossy(),
            "--synthetic-rate",
            "2000",
            "--synthetic-event-every",
            "5",
            "--synthetic-total",
            &total,
        ],
    )?;
    let pool =
        sqlx::SqlitePool::connect(&format!("sqlite://{}", d.join("agg.db").display())).await?;
    let (events, readings, distinct) =
        wait_for("every record stored", Duration::from_secs(60), || async {
            stored(&pool)
                .await
                .ok()
                .filter(|(e, r, _)| e + r == TOTAL as i64)
        })
        .await
        .with_context(|| format!("{}\n{}", gw.output(), agg.output()))?;
    assert_eq!(
        (events, readings, distinct),
        ((TOTAL / 5) as i64, (TOTAL - TOTAL / 5) as i64, TOTAL as i64)
    );
    assert!(
        agg.output()
            .contains("embedded MQTT broker refused a login"),
        "refusals are logged: {}",
        agg.output()
    );
    gw.terminate(Duration::from_secs(10));
    agg.terminate(Duration::from_secs(10));
    Ok(())
}
