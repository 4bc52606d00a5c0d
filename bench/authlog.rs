//! Writes a realistic sshd `auth.log` for the log-scan benchmark and tests.
//!
//!   cargo run --release --example authlog -- LINES ATTACKERS [classic|rfc3339] [SEED] > auth.log
//!
//! The mix follows a busy Internet-facing host: about one line in eight is a failed
//! password, the rest are "Invalid user", disconnects, accepted logins, PAM session
//! lines and cron noise. Attackers are drawn with Zipf-like weights (a few very busy
//! ones, a long tail), 10 % of them IPv6; lines are a second or so apart.

use std::io::{BufWriter, Write};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

const USERS: [&str; 10] = [
    "root", "admin", "test", "oracle", "ubuntu", "user", "postgres", "git", "pi", "guest",
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let lines: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let attackers: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(3000);
    let rfc3339 = args.get(2).is_some_and(|a| a == "rfc3339");
    let mut rng = Rng(args.get(3).and_then(|a| a.parse().ok()).unwrap_or(42) | 1);
    // Zipf-like: attacker k has weight 1/(k+1); sample by inverse CDF on a table.
    let weights: Vec<f64> = (0..attackers).map(|k| 1.0 / (k as f64 + 1.0)).collect();
    let total: f64 = weights.iter().sum();
    let mut cdf = Vec::with_capacity(weights.len());
    let mut acc = 0.0;
    for w in &weights {
        acc += w / total;
        cdf.push(acc);
    }
    let addr = |k: u64| -> String {
        if k % 10 == 9 {
            format!("2001:db8:{:x}::{:x}", k / 256, k % 256 + 1)
        } else {
            format!(
                "{}.{}.{}.{}",
                100 + k % 100,
                (k / 100) % 256,
                (k * 7) % 256,
                k % 250 + 1
            )
        }
    };
    let out = std::io::stdout();
    let mut w = BufWriter::with_capacity(1 << 20, out.lock());
    // 2026-11-20T00:00:00Z, a second or so per line.
    let start: i64 = 1_795_132_800;
    let mut pid = 10_000u64;
    for i in 0..lines {
        let t = start + (i as i64 * 11) / 10;
        let secs = t.rem_euclid(86_400);
        let day = 20 + t.div_euclid(86_400) - start.div_euclid(86_400);
        let (h, m, sec) = (secs / 3600, secs / 60 % 60, secs % 60);
        let ts = if rfc3339 {
            let us = rng.below(1_000_000);
            format!("2026-11-{day:02}T{h:02}:{m:02}:{sec:02}.{us:06}+00:00")
        } else {
            format!("Nov {day:2} {h:02}:{m:02}:{sec:02}")
        };
        let u = rng.next() as f64 / u64::MAX as f64;
        let k = cdf.partition_point(|c| *c < u) as u64;
        let a = addr(k.min(attackers.saturating_sub(1)));
        let user = USERS[rng.below(USERS.len() as u64) as usize];
        let port = 1024 + rng.below(60_000);
        if rng.below(20) == 0 {
            pid += 1;
        }
        let line = match rng.below(100) {
            0..=11 => format!("sshd[{pid}]: Failed password for {user} from {a} port {port} ssh2"),
            12..=13 => format!(
                "sshd[{pid}]: Failed password for invalid user {user} from {a} port {port} ssh2"
            ),
            14..=27 => format!("sshd[{pid}]: Invalid user {user} from {a} port {port}"),
            28..=45 => format!(
                "sshd[{pid}]: Connection closed by invalid user {user} {a} port {port} [preauth]"
            ),
            46..=60 => format!("sshd[{pid}]: Received disconnect from {a} port {port}:11: Bye Bye [preauth]"),
            61..=70 => format!("sshd[{pid}]: Disconnected from authenticating user {user} {a} port {port} [preauth]"),
            71..=74 => format!("sshd[{pid}]: pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost={a}  user={user}"),
            75..=77 => format!("sshd[{pid}]: Accepted publickey for deploy from 192.0.2.10 port {port} ssh2: ED25519 SHA256:Zm9v"),
            78..=82 => format!("sshd[{pid}]: pam_unix(sshd:session): session opened for user deploy(uid=1000) by (uid=0)"),
            83..=86 => format!("sshd[{pid}]: Unable to negotiate with {a} port {port}: no matching key exchange method found."),
            87..=92 => "CRON[31337]: pam_unix(cron:session): session opened for user root(uid=0) by (uid=0)".to_string(),
            93..=96 => format!("systemd-logind[411]: New session {} of user deploy.", rng.below(9999)),
            _ => format!("sshd[{pid}]: error: kex_exchange_identification: Connection closed by remote host"),
        };
        let _ = writeln!(w, "{ts} gw {line}");
    }
}
