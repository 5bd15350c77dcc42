//! Dockerfile instructions → the parts of a kiln spec, stage by stage.
//!
//! Kept apart from the parser and the YAML writer so each rule of the translation (the
//! table in docs/coming-from-docker.md) sits in one small function. What kiln cannot
//! express becomes a [`Warning`] and a `# TODO` comment where it stood; what it expresses
//! differently gets a comment. The image config is taken from the final stage and the
//! stages it is built `FROM`, in order, as Docker inherits it.

mod config;
mod steps;

use std::collections::HashSet;
use std::path::Path;

use super::parse::{Dockerfile, Flag, Instruction};
use super::words::{self, Word};
use super::yaml::{Entry, Item, Node};

/// Something of the Dockerfile the spec does not do, located at its line.
#[derive(Debug, Clone)]
pub struct Warning {
    pub line: usize,
    pub message: String,
    pub hint: Option<String>,
}

/// A stage of the spec being written.
struct Stage {
    name: String,
    from: String,
    comments: Vec<String>,
    env: Vec<(String, String)>,
    steps: Vec<Item>,
    /// The earlier stage it is built from, whose config it inherits.
    base: Option<usize>,
    config: Config,
    /// Comments for `config:` from this stage's instructions.
    config_comments: Vec<String>,
    /// What its instructions know so far; at the end, what a stage built on it starts with.
    scope: Scope,
}

/// A stage kiln needs where Docker needs none: `COPY --from=IMAGE` and a local archive
/// `ADD` read from one. It has no steps, so it goes first.
struct Helper {
    name: String,
    from: String,
    comment: String,
}

/// The image config one stage sets, in Docker's terms.
#[derive(Default, Clone)]
struct Config {
    entrypoint: Option<Node>,
    cmd: Option<Node>,
    /// CMD was set in this stage, so a later ENTRYPOINT keeps it (Docker's rule).
    cmd_set: bool,
    expose: Vec<String>,
    labels: Vec<(String, String)>,
    volumes: Vec<String>,
    stop_signal: Option<String>,
    healthcheck: Option<Node>,
}

/// What a stage's instructions know as they go: names set so far, the workdir, the shell.
#[derive(Clone, Default)]
struct Scope {
    names: HashSet<String>,
    /// ENV values as written in the spec, to tell whether `WORKDIR $DIR` is absolute.
    values: std::collections::HashMap<String, String>,
    workdir: Option<String>,
    shell: Option<Vec<String>>,
}

/// The spec's parts, ready for the YAML writer.
pub struct Converted {
    pub header: Vec<String>,
    pub entries: Vec<Entry>,
    pub warnings: Vec<Warning>,
}

pub struct Options<'a> {
    /// The Dockerfile's folder: the build context its COPY and ADD read.
    pub context: &'a Path,
    pub image: Option<&'a str>,
}

pub fn convert(file: &Dockerfile, options: &Options) -> Result<Converted, Warning> {
    let mut c = Converter {
        escape: file.escape,
        context: options.context,
        args: Vec::new(),
        global: HashSet::new(),
        stages: Vec::new(),
        helpers: Vec::new(),
        warnings: Vec::new(),
        pending: Vec::new(),
    };
    for instruction in &file.instructions {
        c.instruction(instruction)?;
    }
    if c.stages.is_empty() {
        return Err(Warning {
            line: file.instructions.last().map_or(1, |i| i.line),
            message: "no FROM instruction".into(),
            hint: Some("a Dockerfile starts its first stage with FROM IMAGE".into()),
        });
    }
    c.pending_to_stage();
    Ok(c.finish(options.image))
}

struct Converter<'a> {
    escape: char,
    context: &'a Path,
    args: Vec<(String, String)>,
    /// ARGs declared before the first FROM: the only names FROM may use.
    global: HashSet<String>,
    stages: Vec<Stage>,
    helpers: Vec<Helper>,
    warnings: Vec<Warning>,
    /// Comments for the next step of the current stage.
    pending: Vec<String>,
}

impl Converter<'_> {
    fn instruction(&mut self, i: &Instruction) -> Result<(), Warning> {
        if self.stages.is_empty() && !matches!(i.keyword.as_str(), "FROM" | "ARG") {
            return Err(warning(i, "only ARG may come before the first FROM", None));
        }
        match i.keyword.as_str() {
            "FROM" => self.from(i)?,
            "ARG" => self.arg(i),
            "ENV" => self.env(i),
            "RUN" => self.run(i),
            "COPY" | "ADD" => self.copy(i),
            "WORKDIR" => self.workdir(i),
            "USER" => {
                let user = self.word(i, &i.args);
                self.step(vec![Entry::scalar("user", &user)]);
            }
            "SHELL" => self.shell(i),
            "ENTRYPOINT" | "CMD" => self.command(i),
            "EXPOSE" => self.expose(i),
            "LABEL" => self.label(i),
            "MAINTAINER" => {
                let name = self.word(i, &i.args);
                self.pending.push(format!(
                    "Dockerfile:{}: MAINTAINER is the label \"maintainer\"",
                    i.line
                ));
                self.config().labels.push(("maintainer".into(), name));
            }
            "VOLUME" => self.volume(i),
            "STOPSIGNAL" => {
                let signal = self.word(i, &i.args);
                self.config().stop_signal = Some(signal);
            }
            "HEALTHCHECK" => self.healthcheck(i),
            "ONBUILD" => self.untranslatable(
                i,
                "ONBUILD has no kiln equivalent",
                "kiln has no triggers: put these steps in the specs that build on this image",
            ),
            _ => unreachable!("the parser knows only these"),
        }
        if CONFIG_INSTRUCTIONS.contains(&i.keyword.as_str()) {
            let notes = std::mem::take(&mut self.pending);
            self.stage().config_comments.extend(notes);
        }
        Ok(())
    }

    fn finish(mut self, image: Option<&str>) -> Converted {
        let (config, config_comments) = self.final_config();
        let mut entries = Vec::new();
        if let Some(image) = image {
            entries.push(Entry::scalar("image", image));
        }
        if !self.args.is_empty() {
            entries.push(Entry::new("args", Node::pairs(&self.args)));
        }
        if self.stages.len() == 1 && self.helpers.is_empty() {
            let stage = self.stages.pop().expect("one stage");
            if !stage.env.is_empty() {
                entries.push(Entry::new("env", Node::pairs(&stage.env)));
            }
            let mut from = Entry::scalar("from", &stage.from);
            from.comments = stage.comments;
            entries.push(from);
            if !stage.steps.is_empty() {
                entries.push(Entry::new("steps", Node::List(stage.steps)));
            }
        } else {
            let mut stages: Vec<Entry> = self.helpers.iter().map(helper_entry).collect();
            stages.extend(self.stages.into_iter().map(stage_entry));
            entries.push(Entry::new("stages", Node::Map(stages)));
        }
        if let Some(config) = config {
            let mut entry = Entry::new("config", config);
            entry.comments = config_comments;
            entries.push(entry);
        }
        Converted {
            header: Vec::new(),
            entries,
            warnings: self.warnings,
        }
    }

    /// The final stage's config, over those of the stages it is built from.
    fn final_config(&self) -> (Option<Node>, Vec<String>) {
        let mut chain = Vec::new();
        let mut at = self.stages.len().checked_sub(1);
        while let Some(i) = at {
            chain.push(i);
            at = self.stages[i].base;
        }
        let mut merged = Config::default();
        let mut comments = Vec::new();
        for i in chain.into_iter().rev() {
            merge(&mut merged, &self.stages[i].config);
            comments.extend(self.stages[i].config_comments.iter().cloned());
        }
        (config_node(&merged), comments)
    }

    // ---- stages, scope and comments ----

    fn from(&mut self, i: &Instruction) -> Result<(), Warning> {
        self.pending_to_stage();
        let parts = words::split(&i.args, self.escape);
        let (image, alias) = match parts.as_slice() {
            [image] => (image.clone(), None),
            [image, as_, name] if as_.eq_ignore_ascii_case("as") => {
                (image.clone(), Some(stage_name(name)))
            }
            _ => return Err(warning(i, "FROM takes IMAGE [AS NAME]", None)),
        };
        let global = self.global.clone();
        let image = self.word_with(i, &image, &|n| global.contains(n));
        for flag in &i.flags {
            self.note(
                i,
                &format!("FROM --{} is left out", flag.name),
                "kiln builds for the machine it runs on",
            );
        }
        let base = self.stage_index(&image);
        let name = alias.unwrap_or_else(|| format!("stage-{}", self.stages.len()));
        let (from, scope) = match base {
            Some(b) => (
                self.stages[b].name.clone(),
                Scope {
                    shell: None,
                    ..self.stages[b].scope.clone()
                },
            ),
            None => (image, Scope::default()),
        };
        let comments = std::mem::take(&mut self.pending);
        self.stages.push(Stage {
            name,
            from,
            comments,
            env: Vec::new(),
            steps: Vec::new(),
            base,
            config: Config::default(),
            config_comments: Vec::new(),
            scope,
        });
        Ok(())
    }

    fn stage_index(&self, name: &str) -> Option<usize> {
        if let Ok(n) = name.parse::<usize>() {
            return (n < self.stages.len()).then_some(n);
        }
        let name = stage_name(name);
        self.stages.iter().position(|s| s.name == name)
    }

    fn stage(&mut self) -> &mut Stage {
        self.stages.last_mut().expect("FROM came first")
    }

    fn scope(&mut self) -> &mut Scope {
        &mut self.stage().scope
    }

    fn config(&mut self) -> &mut Config {
        &mut self.stage().config
    }

    /// A step of the current stage, with the comments gathered for it.
    fn step(&mut self, entries: Vec<Entry>) {
        let comments = std::mem::take(&mut self.pending);
        self.stage().steps.push(Item {
            comments,
            node: Node::Map(entries),
        });
    }

    /// Comments no step followed (the stage ended): they go above the stage.
    fn pending_to_stage(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        if let Some(stage) = self.stages.last_mut() {
            stage.comments.extend(pending);
        }
    }

    /// A word of instruction `i` as a kiln string, names resolved in the current scope
    /// (kiln's args are the whole spec's, so every ARG of the Dockerfile counts).
    fn word(&mut self, i: &Instruction, raw: &str) -> String {
        let names = self.stage().scope.names.clone();
        let args: HashSet<String> = self.args.iter().map(|(k, _)| k.clone()).collect();
        self.word_with(i, raw.trim(), &|n| names.contains(n) || args.contains(n))
    }

    fn word_with(&mut self, i: &Instruction, raw: &str, defined: &dyn Fn(&str) -> bool) -> String {
        let Word {
            text,
            unresolved,
            unsupported,
        } = words::process(raw, self.escape, defined);
        for name in unresolved {
            match name.as_str() {
                "PATH" => self.note(
                    i,
                    "$PATH is the base image's, which a spec cannot see",
                    &format!("Docker's default {} stands in for it", words::DOCKER_PATH),
                ),
                _ => self.note(
                    i,
                    &format!("${name} is not set by this Dockerfile"),
                    "docker would take it from the base image's environment; here it is empty",
                ),
            }
        }
        for reference in unsupported {
            self.note(
                i,
                &format!("{reference} has no kiln equivalent"),
                "kiln substitutes ${NAME} and ${NAME:-default} only; kept as literal text",
            );
        }
        text
    }

    /// A difference from docker's result, said on stderr and in a comment where it is.
    fn note(&mut self, i: &Instruction, message: &str, hint: &str) {
        self.pending
            .push(format!("Dockerfile:{}: {message} ({hint})", i.line));
        self.warnings.push(warning(i, message, Some(hint.into())));
    }

    /// An instruction left out: a warning, and a `# TODO` with its text where it stood.
    fn untranslatable(&mut self, i: &Instruction, message: &str, hint: &str) {
        self.warnings.push(warning(i, message, Some(hint.into())));
        self.pending.push(format!(
            "TODO Dockerfile:{}: {message} ({hint}):\n    {}",
            i.line, i.source
        ));
    }

    // ---- ARG, ENV, WORKDIR, SHELL ----

    fn arg(&mut self, i: &Instruction) {
        for raw in words::split(&i.args, self.escape) {
            let (name, default) = match raw.split_once('=') {
                Some((n, d)) => (n.to_owned(), Some(d.to_owned())),
                None => (raw.clone(), None),
            };
            let default = default.map(|d| self.arg_default(i, &d));
            let default = match (default, platform_default(&name)) {
                (Some(d), _) => Some(d),
                (None, Some(p)) => {
                    self.pending.push(format!(
                        "Dockerfile:{}: {name} is BuildKit's automatic arg: \
                         this machine's value",
                        i.line
                    ));
                    Some(p)
                }
                (None, None) => None,
            };
            self.declare_arg(i, &name, default);
        }
    }

    /// An ARG default: kiln takes it as written, so a reference in it is reported.
    fn arg_default(&mut self, i: &Instruction, raw: &str) -> String {
        let value = words::process(raw, self.escape, &|_| true);
        if value.text.contains("${") || !value.unsupported.is_empty() {
            self.note(
                i,
                "a reference in an ARG default is not expanded by kiln",
                "args: values are used as written",
            );
        }
        value.text.replace("$$", "$")
    }

    fn declare_arg(&mut self, i: &Instruction, name: &str, default: Option<String>) {
        match self.stages.last_mut() {
            None => {
                self.global.insert(name.to_owned());
            }
            Some(stage) => {
                stage.scope.names.insert(name.to_owned());
            }
        }
        let Some(at) = self.args.iter().position(|(k, _)| k == name) else {
            // Docker gives an ARG without a default an empty value; kiln would ask for
            // --arg, so the empty value is written out.
            self.args
                .push((name.to_owned(), default.unwrap_or_default()));
            return;
        };
        let old = self.args[at].1.clone();
        match default {
            Some(d) if old != d && !old.is_empty() => self.note(
                i,
                &format!("ARG {name} has another default in an earlier ARG ({old:?})"),
                "kiln's args are the whole spec's: the first default is kept",
            ),
            Some(d) => self.args[at].1 = d,
            None => {}
        }
    }

    fn env(&mut self, i: &Instruction) {
        let mut pairs = Vec::new();
        for (name, raw) in self.pairs(i) {
            let value = self.word(i, &raw);
            self.scope().names.insert(name.clone());
            self.scope().values.insert(name.clone(), value.clone());
            pairs.push((name, value));
        }
        // ENV before any step is the stage's (or, alone, the spec's) env: the same
        // variables for every step and the image, as the docs' example writes it.
        match self.stage().steps.is_empty() && self.pending.is_empty() {
            true => self.stage().env.extend(pairs),
            false => self.step(vec![Entry::new("env", Node::pairs(&pairs))]),
        }
    }

    /// `K=V` pairs of ENV and LABEL (and the old `ENV K V` form), values unprocessed.
    fn pairs(&mut self, i: &Instruction) -> Vec<(String, String)> {
        let words = words::split(&i.args, self.escape);
        if let Some(first) = words.first().filter(|w| !w.contains('=')) {
            let rest = i.args.trim_start()[first.len()..].trim();
            return vec![(first.clone(), rest.to_owned())];
        }
        words
            .iter()
            .filter_map(|w| w.split_once('='))
            .map(|(k, v)| {
                let key = words::process(k, self.escape, &|_| true).text;
                (key.replace("$$", "$"), v.to_owned())
            })
            .collect()
    }

    fn workdir(&mut self, i: &Instruction) {
        let dir = self.word(i, &i.args);
        let absolute = self.is_absolute(&dir, 0);
        let dir = match (absolute, self.stage().scope.workdir.clone()) {
            (true, _) => dir,
            (false, Some(current)) => format!("{}/{dir}", current.trim_end_matches('/')),
            (false, None) => {
                self.note(
                    i,
                    &format!("WORKDIR {dir} is relative to the base image's workdir"),
                    "kiln needs an absolute path: taken from /",
                );
                format!("/{dir}")
            }
        };
        self.scope().workdir = Some(dir.clone());
        self.step(vec![Entry::scalar("workdir", &dir)]);
    }

    /// Whether a path, once kiln substitutes it, starts with `/`: a leading `${NAME}` is
    /// looked up in the ENV values and ARG defaults written so far.
    fn is_absolute(&mut self, text: &str, depth: usize) -> bool {
        if text.starts_with('/') || depth > 8 {
            return text.starts_with('/');
        }
        let Some(reference) = text.strip_prefix("${").and_then(|r| r.split_once('}')) else {
            return false;
        };
        let (name, default) = match reference.0.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (reference.0, None),
        };
        let value = self.stage().scope.values.get(name).cloned().or_else(|| {
            let arg = self.args.iter().find(|(k, _)| k == name);
            arg.map(|(_, v)| v.clone())
        });
        match value
            .filter(|v| !v.is_empty())
            .or(default.map(str::to_owned))
        {
            Some(v) => self.is_absolute(&v, depth + 1),
            None => false,
        }
    }

    fn shell(&mut self, i: &Instruction) {
        match &i.exec {
            Some(shell) if !shell.is_empty() => {
                let shell = shell.clone();
                self.scope().shell = Some(shell);
            }
            _ => self.untranslatable(
                i,
                "SHELL needs the JSON form",
                "write SHELL [\"/bin/bash\", \"-c\"]",
            ),
        }
    }

    /// The `shell:` of a string `run:` under Docker's SHELL: kiln's convention adds `-e`
    /// before a POSIX shell's `-c` (docs/coming-from-docker.md).
    fn run_shell(&mut self) -> Option<Vec<String>> {
        let mut shell = self.stage().scope.shell.clone()?;
        let posix = ["sh", "bash", "ash", "dash", "zsh", "ksh"];
        let program = shell[0].rsplit('/').next().unwrap_or("");
        let has_e = shell
            .iter()
            .any(|a| a == "-e" || a.starts_with("-e") && a.len() > 2);
        if posix.contains(&program) && shell.last().is_some_and(|a| a == "-c") && !has_e {
            shell.insert(shell.len() - 1, "-e".into());
        }
        Some(shell.iter().map(|a| words::literal(a)).collect())
    }
}

/// Instructions that set the image config: their comments go above `config:`.
const CONFIG_INSTRUCTIONS: [&str; 9] = [
    "ENTRYPOINT",
    "CMD",
    "EXPOSE",
    "LABEL",
    "MAINTAINER",
    "VOLUME",
    "STOPSIGNAL",
    "HEALTHCHECK",
    "SHELL",
];

/// BuildKit's automatic platform args, which it sets when an ARG names them.
fn platform_default(name: &str) -> Option<String> {
    let arch = kiln_image::go_arch();
    let value = match name {
        "TARGETPLATFORM" | "BUILDPLATFORM" => format!("linux/{arch}"),
        "TARGETOS" | "BUILDOS" => "linux".into(),
        "TARGETARCH" | "BUILDARCH" => arch.into(),
        "TARGETVARIANT" | "BUILDVARIANT" => String::new(),
        _ => return None,
    };
    Some(value)
}

fn helper_entry(h: &Helper) -> Entry {
    Entry {
        comments: vec![h.comment.clone()],
        key: h.name.clone(),
        node: Node::Map(vec![Entry::scalar("from", &h.from)]),
    }
}

fn stage_entry(s: Stage) -> Entry {
    let mut entries = vec![Entry::scalar("from", &s.from)];
    if !s.env.is_empty() {
        entries.push(Entry::new("env", Node::pairs(&s.env)));
    }
    if !s.steps.is_empty() {
        entries.push(Entry::new("steps", Node::List(s.steps)));
    }
    Entry {
        comments: s.comments,
        key: s.name,
        node: Node::Map(entries),
    }
}

fn warning(i: &Instruction, message: &str, hint: Option<String>) -> Warning {
    Warning {
        line: i.line,
        message: message.to_owned(),
        hint,
    }
}

/// A Dockerfile stage name as a kiln one (lower case letters, digits, `-`, `_`, `.`).
fn stage_name(name: &str) -> String {
    let name: String = name
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c if c.is_ascii_alphanumeric() || "-_.".contains(c) => c,
            _ => '-',
        })
        .collect();
    match name.chars().next() {
        Some(c) if c.is_ascii_alphanumeric() && name != "scratch" => name,
        _ => format!("s{name}"),
    }
}

fn merge(into: &mut Config, stage: &Config) {
    if stage.entrypoint.is_some() {
        into.entrypoint = stage.entrypoint.clone();
        if !stage.cmd_set {
            into.cmd = None;
        }
    }
    if stage.cmd.is_some() {
        into.cmd = stage.cmd.clone();
    }
    for port in &stage.expose {
        if !into.expose.contains(port) {
            into.expose.push(port.clone());
        }
    }
    for (k, v) in &stage.labels {
        into.labels.retain(|(key, _)| key != k);
        into.labels.push((k.clone(), v.clone()));
    }
    for v in &stage.volumes {
        if !into.volumes.contains(v) {
            into.volumes.push(v.clone());
        }
    }
    if stage.stop_signal.is_some() {
        into.stop_signal = stage.stop_signal.clone();
    }
    if stage.healthcheck.is_some() {
        into.healthcheck = stage.healthcheck.clone();
    }
}

fn config_node(c: &Config) -> Option<Node> {
    let mut entries = Vec::new();
    if let Some(ep) = &c.entrypoint {
        entries.push(Entry::new("entrypoint", ep.clone()));
    }
    if let Some(cmd) = &c.cmd {
        entries.push(Entry::new("cmd", cmd.clone()));
    }
    if !c.expose.is_empty() {
        entries.push(Entry::new("expose", Node::list(&c.expose)));
    }
    if !c.labels.is_empty() {
        entries.push(Entry::new("labels", Node::pairs(&c.labels)));
    }
    if !c.volumes.is_empty() {
        entries.push(Entry::new("volumes", Node::list(&c.volumes)));
    }
    if let Some(s) = &c.stop_signal {
        entries.push(Entry::scalar("stop_signal", s));
    }
    if let Some(h) = &c.healthcheck {
        entries.push(Entry::new("healthcheck", h.clone()));
    }
    (!entries.is_empty()).then_some(Node::Map(entries))
}

/// The value of flag `name`, when given.
fn flag<'f>(flags: &'f [Flag], name: &str) -> Option<&'f Flag> {
    flags.iter().find(|f| f.name == name)
}
