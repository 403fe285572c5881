//! The one netfilter rule a berth network needs: with `br_netfilter` loaded and
//! `bridge-nf-call-iptables=1` (Docker's default setup), frames bridged between two ports of
//! a bridge traverse iptables' `FORWARD` chain, whose policy Docker sets to `DROP`. Docker
//! accepts traffic on its own bridges with rules of its own; berth inserts
//! `FORWARD -i berthbrN -o berthbrN -j ACCEPT` for each of its bridges, so containers on one
//! berth network (local or across the VXLAN port) reach each other, and removes it with the
//! network. Like Docker, it runs the `iptables` program for this (netfilter rules have no
//! rtnetlink interface); a host without `iptables` has no such filtering to get past.

use tokio::process::Command;

fn rule(bridge: &str) -> [&str; 8] {
    ["FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT", "-w"]
}

async fn iptables(op: &str, bridge: &str) -> Result<bool, String> {
    let r = rule(bridge);
    match Command::new("iptables").arg(op).args(r).output().await {
        Ok(o) => Ok(o.status.success()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err("missing".into()),
        Err(e) => Err(format!("running iptables: {e}")),
    }
}

/// Makes sure traffic between ports of `bridge` is accepted.
pub async fn allow_bridge(bridge: &str) -> Result<(), String> {
    match iptables("-C", bridge).await {
        Ok(true) => Ok(()),
        Ok(false) => match Command::new("iptables")
            .arg("-I")
            .args(rule(bridge))
            .output()
            .await
        {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(format!(
                "iptables -I FORWARD -i {bridge} -o {bridge} -j ACCEPT failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => Err(format!("running iptables: {e}")),
        },
        Err(e) if e == "missing" => {
            tracing::debug!(bridge, "no iptables program: no FORWARD rule needed");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Removes the rule of `bridge` (absent is fine).
pub async fn forget_bridge(bridge: &str) {
    while let Ok(true) = iptables("-D", bridge).await {}
}
