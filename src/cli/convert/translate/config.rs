//! `ENTRYPOINT`, `CMD`, `EXPOSE`, `LABEL`, `VOLUME`, `HEALTHCHECK`: the image config.

use super::super::parse::Instruction;
use super::super::words;
use super::super::yaml::{Entry, Node};
use super::{flag, Converter};

impl Converter<'_> {
    pub(super) fn command(&mut self, i: &Instruction) {
        let node = match &i.exec {
            Some(argv) => Node::list(&literal_all(argv)),
            // Under SHELL, Docker runs the shell form with that shell; kiln's string form
            // is always /bin/sh -c, so the list is written out.
            None => match self.stage().scope.shell.clone() {
                Some(mut shell) => {
                    shell.push(i.args.trim().to_owned());
                    Node::list(&literal_all(&shell))
                }
                None => Node::Scalar(words::literal(i.args.trim())),
            },
        };
        let config = self.config();
        match i.keyword.as_str() {
            "ENTRYPOINT" => config.entrypoint = Some(node),
            _ => {
                config.cmd = Some(node);
                config.cmd_set = true;
            }
        }
    }

    pub(super) fn expose(&mut self, i: &Instruction) {
        for raw in words::split(&i.args, self.escape) {
            let word = self.word(i, &raw);
            let (ports, protocol) = match word.split_once('/') {
                Some((p, proto)) => (p.to_owned(), proto.to_ascii_lowercase()),
                None => (word.clone(), "tcp".to_owned()),
            };
            let known = ["tcp", "udp", "sctp"].contains(&protocol.as_str());
            match port_range(&ports) {
                Some((first, last)) if known => {
                    for port in first..=last {
                        self.config().expose.push(format!("{port}/{protocol}"));
                    }
                }
                // A reference to an arg or env: kiln substitutes it.
                _ if word.contains("${") => self.config().expose.push(word),
                // Docker refuses it too.
                _ => self.untranslatable(
                    i,
                    &format!("EXPOSE {raw}: not a port"),
                    "a port is 1 to 65535 (or a range, 8000-8002), with /tcp, /udp or /sctp",
                ),
            }
        }
    }

    pub(super) fn label(&mut self, i: &Instruction) {
        for (key, raw) in self.pairs(i) {
            let value = self.word(i, &raw);
            self.config().labels.push((key, value));
        }
    }

    pub(super) fn volume(&mut self, i: &Instruction) {
        let raw = match &i.exec {
            Some(list) => list.iter().map(|v| format!("'{v}'")).collect(),
            None => words::split(&i.args, self.escape),
        };
        for v in raw {
            let volume = self.word(i, &v);
            self.config().volumes.push(volume);
        }
    }

    pub(super) fn healthcheck(&mut self, i: &Instruction) {
        let args = i.args.trim();
        let (kind, rest) = args.split_once(char::is_whitespace).unwrap_or((args, ""));
        let test = match kind.to_ascii_uppercase().as_str() {
            "NONE" => Node::list(&["NONE".to_owned()]),
            "CMD" => match super::super::parse::json_array(rest) {
                Some(argv) => {
                    let mut test = vec!["CMD".to_owned()];
                    test.extend(literal_all(&argv));
                    Node::list(&test)
                }
                None => Node::Scalar(words::literal(rest.trim())),
            },
            _ => {
                return self.untranslatable(
                    i,
                    "HEALTHCHECK takes CMD or NONE",
                    "write HEALTHCHECK CMD command",
                )
            }
        };
        let mut entries = vec![Entry::new("test", test)];
        for (docker, kiln) in [
            ("interval", "interval"),
            ("timeout", "timeout"),
            ("start-period", "start_period"),
            ("retries", "retries"),
        ] {
            let Some(value) = flag(&i.flags, docker).and_then(|f| f.value.clone()) else {
                continue;
            };
            match value.parse::<u32>() {
                Ok(n) if docker == "retries" => {
                    entries.push(Entry::new(kiln, Node::Plain(n.to_string())))
                }
                _ => entries.push(Entry::scalar(kiln, &value)),
            }
        }
        for f in &i.flags {
            let known = ["interval", "timeout", "start-period", "retries"];
            if !known.contains(&f.name.as_str()) {
                self.note(
                    i,
                    &format!("HEALTHCHECK --{} is left out", f.name),
                    "kiln's healthcheck has interval, timeout, start_period and retries",
                );
            }
        }
        self.config().healthcheck = Some(Node::Map(entries));
    }
}

fn literal_all(argv: &[String]) -> Vec<String> {
    argv.iter().map(|a| words::literal(a)).collect()
}

/// `8080` or `8000-8002` as the first and last port (0 is no port, a range runs upward).
fn port_range(text: &str) -> Option<(u16, u16)> {
    let (first, last): (u16, u16) = match text.split_once('-') {
        Some((a, b)) => (a.parse().ok()?, b.parse().ok()?),
        None => text.parse().ok().map(|p| (p, p))?,
    };
    (first > 0 && first <= last).then_some((first, last))
}
