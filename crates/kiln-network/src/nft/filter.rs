//! The forward filter of a named network's table: `--internal` (nothing forwarded
//! between its bridge and any other interface) and the isolation between kiln networks
//! (docker's: containers on two networks do not reach each other).
//!
//! Both are drops in the network's own table, on its own bridge's name: kiln never adds
//! to or reads another table. Each network drops both directions itself, so two networks
//! are apart even while only one of them has a table. A drop in any table ends a packet;
//! the `accept` policy here decides nothing for what another table does.

use super::Table;

/// Names that kiln's bridges have: named networks' `kb` + 12 hex digits, and the default
/// network's `kiln0`.
pub const KILN_BRIDGES: [&str; 2] = ["kb*", "kiln0"];

impl Table {
    /// The `forward` chain and its rules; empty for a network that neither is internal
    /// nor isolated (the default network: its table then has no filter hook at all).
    pub(super) fn filter_script(&self) -> String {
        if !self.internal && !self.isolated {
            return String::new();
        }
        let Table { name, bridge, .. } = self;
        let mut script = format!(
            "table ip {name} {{\n\
             \tchain forward {{\n\
             \t\ttype filter hook forward priority filter; policy accept;\n\
             \t}}\n\
             }}\n"
        );
        let mut drop =
            |rule: String| script.push_str(&format!("add rule ip {name} forward {rule} drop\n"));
        if self.internal {
            drop(format!("iifname \"{bridge}\" oifname != \"{bridge}\""));
            drop(format!("oifname \"{bridge}\" iifname != \"{bridge}\""));
        } else {
            for other in KILN_BRIDGES {
                drop(format!(
                    "iifname \"{bridge}\" oifname \"{other}\" oifname != \"{bridge}\""
                ));
                drop(format!(
                    "iifname \"{other}\" iifname != \"{bridge}\" oifname \"{bridge}\""
                ));
            }
        }
        script
    }
}

#[cfg(test)]
mod tests {
    use crate::nft::Table;
    use crate::Subnet;

    fn table(internal: bool, isolated: bool) -> Table {
        Table {
            name: "kiln_0123456789ab".to_owned(),
            bridge: "kb0123456789ab".to_owned(),
            subnet: "10.89.1.0/24".parse::<Subnet>().unwrap(),
            internal,
            isolated,
        }
    }

    #[test]
    fn an_internal_network_forwards_nothing_and_masquerades_nothing() {
        let script = table(true, true).create_script();
        assert!(!script.contains("saddr 10.89.1.0/24"), "{script}");
        assert!(script.contains(
            "add rule ip kiln_0123456789ab forward iifname \"kb0123456789ab\" oifname != \"kb0123456789ab\" drop\n"
        ));
        assert!(script.contains(
            "add rule ip kiln_0123456789ab forward oifname \"kb0123456789ab\" iifname != \"kb0123456789ab\" drop\n"
        ));
    }

    #[test]
    fn an_isolated_network_drops_to_and_from_other_kiln_bridges_only() {
        let script = table(false, true).create_script();
        assert!(script.contains("masquerade"), "{script}");
        assert!(script.contains(
            "forward iifname \"kb0123456789ab\" oifname \"kb*\" oifname != \"kb0123456789ab\" drop\n"
        ));
        assert!(script.contains("forward iifname \"kiln0\" iifname != \"kb0123456789ab\" oifname \"kb0123456789ab\" drop\n"));
        assert!(table(false, false).filter_script().is_empty());
    }
}
