//! Dockerfile instructions → the parts of a kiln spec, stage by stage.
//!
//! Kept apart from the parser and the YAML writer so each rule of the translation (the
//! table in docs/coming-from-docker.md) sits in one small function. What kiln cannot
//! express becomes a [`Warning`] and a `# TODO` comment where it stood; what it expresses
//! differently gets a comment. The image config is taken from the final stage and the
//! stages it is built `FROM`, in order, as Docker inherits it.
//!
//! Scope is Docker's, not kiln's: an `ARG` counts only in the stage that declares it (kiln's
//! args are the whole spec's), `ENV` is inherited by the stages built on its stage, and one
//! `ENV`'s values see the variables as they were before it. Where kiln would read the same
//! text otherwise, the text is written so that it reads the same, or there is a warning.
//!
//! The input is untrusted (any file a user points it at), so nothing here costs more than
//! a bounded walk per instruction: scopes are looked up through the chain of base stages
//! (at most [`MAX_STAGE_DEPTH`] deep) instead of copied, and what the spec would hold is
//! bounded by what kiln loads.

mod config;
mod steps;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;

use super::parse::{Dockerfile, Flag, Instruction};
use super::words::{self, Name, Word};
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
    /// The earlier stage it is built from, whose config and ENV it inherits.
    base: Option<usize>,
    /// How many stages it is built on (0 for an image base).
    depth: usize,
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

/// What a stage's own instructions have set so far; a base stage's ENV is found through
/// `Stage::base`, not copied, so a wide or deep Dockerfile costs no copies of it.
#[derive(Default)]
struct Scope {
    /// ENV names with their values as written in the spec (to tell whether `WORKDIR $DIR`
    /// is absolute).
    env: HashMap<String, String>,
    /// The ARGs this stage declares (Docker's ARG scope ends with its stage), each with
    /// its place in the order declared.
    declared: HashMap<String, usize>,
    /// Those no ENV has set (an ENV of the same name wins in Docker's RUN, and in kiln's),
    /// by that place: what every RUN of the stage has in its environment. Kept as they
    /// change, so a RUN walks only these.
    run_args: BTreeMap<usize, String>,
    workdir: Option<String>,
    shell: Option<Vec<String>>,
}

/// Stages built on stages built on stages…: far beyond any real Dockerfile, and the bound
/// on the walk that finds a variable through them.
pub const MAX_STAGE_DEPTH: usize = 64;
/// More warnings than a person reads: the Dockerfile is not one kiln convert helps with.
const MAX_WARNINGS: usize = 1000;
/// kiln-spec's bound on a spec's size, which no converted spec can pass.
pub const MAX_SPEC_BYTES: usize = 1024 * 1024;

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
        arg_index: HashMap::new(),
        every_arg: every_arg(file),
        global: HashMap::new(),
        arg_lines: HashMap::new(),
        stages: Vec::new(),
        stage_names: HashMap::new(),
        kiln_names: HashSet::new(),
        helpers: Vec::new(),
        helper_index: HashMap::new(),
        helper_names: HashSet::new(),
        warnings: Vec::new(),
        noted: HashSet::new(),
        pending: Vec::new(),
        written: 0,
    };
    for instruction in &file.instructions {
        c.instruction(instruction)?;
        if c.warnings.len() > MAX_WARNINGS {
            return Err(warning(
                instruction,
                &format!("more than {MAX_WARNINGS} things could not be translated exactly"),
                Some("this Dockerfile is beyond what kiln convert translates".into()),
            ));
        }
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
    /// The spec's `args:`, in the order the Dockerfile declares them.
    args: Vec<(String, String)>,
    arg_index: HashMap<String, usize>,
    /// Every name any ARG of the Dockerfile declares, later ones too: the names kiln will
    /// substitute wherever they appear.
    every_arg: HashSet<String>,
    /// ARGs declared before the first FROM, with their defaults: the only names FROM may
    /// use, and what `ARG NAME` without a default gives in a stage.
    global: HashMap<String, String>,
    /// The line of the ARG whose value is the spec's default for each arg.
    arg_lines: HashMap<String, usize>,
    stages: Vec<Stage>,
    /// The stages by their Dockerfile name (`AS name`), and the spec's keys of them all.
    stage_names: HashMap<String, usize>,
    kiln_names: HashSet<String>,
    helpers: Vec<Helper>,
    /// Which helper reads each source, and the names they took.
    helper_index: HashMap<String, usize>,
    helper_names: HashSet<String>,
    warnings: Vec<Warning>,
    /// `LINE message` of each warning given, so one instruction says a thing once.
    noted: HashSet<String>,
    /// Comments for the next step of the current stage.
    pending: Vec<String>,
    /// Bytes of script text written beyond the Dockerfile's own (the lines that name a
    /// stage's ARGs), bounded by what a spec may hold.
    written: usize,
}

/// The names every ARG of the file declares.
fn every_arg(file: &Dockerfile) -> HashSet<String> {
    file.instructions
        .iter()
        .filter(|i| i.keyword == "ARG")
        .flat_map(|i| words::split(&i.args, file.escape))
        .map(|w| w.split_once('=').map_or(w.clone(), |(n, _)| n.to_owned()))
        .collect()
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
            "RUN" => self.run(i)?,
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
        let image = self.image_word(i, &image);
        for flag in &i.flags {
            self.note(
                i,
                &format!("FROM --{} is left out", flag.name),
                "kiln builds for the machine it runs on",
            );
        }
        let base = self.stage_index(&image);
        let name = self.unique_stage_name(alias.as_deref());
        if let Some(alias) = alias {
            // Docker refuses a name used twice; the first keeps it here.
            self.stage_names.entry(alias).or_insert(self.stages.len());
        }
        // A stage built on another keeps its ENV (looked up through `base`) and workdir;
        // its ARGs and SHELL are the other stage's own.
        let (from, depth, workdir) = match base {
            Some(b) => (
                self.stages[b].name.clone(),
                self.stages[b].depth + 1,
                self.stages[b].scope.workdir.clone(),
            ),
            None => (image, 0, None),
        };
        if depth > MAX_STAGE_DEPTH {
            return Err(warning(
                i,
                &format!("more than {MAX_STAGE_DEPTH} stages built one on another"),
                Some("kiln convert follows at most that many".into()),
            ));
        }
        let comments = std::mem::take(&mut self.pending);
        self.stages.push(Stage {
            name,
            from,
            comments,
            env: Vec::new(),
            steps: Vec::new(),
            base,
            depth,
            config: Config::default(),
            config_comments: Vec::new(),
            scope: Scope {
                workdir,
                ..Scope::default()
            },
        });
        Ok(())
    }

    /// The spec's key for a stage: its Dockerfile name (`stage-N` without one), numbered
    /// when a helper stage or another stage already has it.
    fn unique_stage_name(&mut self, alias: Option<&str>) -> String {
        let wanted = alias.map_or_else(|| format!("stage-{}", self.stages.len()), str::to_owned);
        let mut name = wanted.clone();
        let mut n = 1;
        while self.helper_names.contains(&name) || !self.kiln_names.insert(name.clone()) {
            n += 1;
            name = format!("{wanted}-{n}");
        }
        name
    }

    fn stage_index(&self, name: &str) -> Option<usize> {
        if let Ok(n) = name.parse::<usize>() {
            return (n < self.stages.len()).then_some(n);
        }
        self.stage_names.get(&stage_name(name)).copied()
    }

    /// The value an ENV gave `name` as the current stage sees it: its own, else that of
    /// the stages it is built on.
    fn env_value(&self, name: &str) -> Option<&String> {
        let mut at = self.stages.len().checked_sub(1);
        while let Some(i) = at {
            if let Some(value) = self.stages[i].scope.env.get(name) {
                return Some(value);
            }
            at = self.stages[i].base;
        }
        None
    }

    /// What `name` is at this point of the current stage (see [`Name`]).
    fn name_kind(&self, name: &str) -> Name {
        let declared = self
            .stages
            .last()
            .is_some_and(|s| s.scope.declared.contains_key(name));
        match (
            declared || self.env_value(name).is_some(),
            self.every_arg.contains(name),
        ) {
            (true, _) => Name::Set,
            (false, true) => Name::OtherStagesArg,
            (false, false) => Name::Unknown,
        }
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

    /// A word of instruction `i` as a kiln string, names resolved in the current scope.
    fn word(&mut self, i: &Instruction, raw: &str) -> String {
        let word = words::process(raw.trim(), self.escape, &|n| self.name_kind(n));
        self.reported(i, word)
    }

    /// A word of FROM, which sees only the ARGs declared before the first FROM.
    fn image_word(&mut self, i: &Instruction, raw: &str) -> String {
        let kind = |n: &str| match (self.global.contains_key(n), self.every_arg.contains(n)) {
            (true, _) => Name::Set,
            (false, true) => Name::OtherStagesArg,
            (false, false) => Name::Unknown,
        };
        let word = words::process(raw, self.escape, &kind);
        self.reported(i, word)
    }

    /// The word's text, its references that kiln cannot read as docker does noted.
    fn reported(&mut self, i: &Instruction, word: Word) -> String {
        let Word {
            text,
            unresolved,
            unsupported,
            names: _,
        } = word;
        for name in unresolved {
            match name.as_str() {
                _ if self.every_arg.contains(&name) => self.note(
                    i,
                    &format!("${name} is an ARG that this stage does not declare"),
                    "Docker leaves it unset here (or takes the base image's variable), and so \
                     does the spec: declare it with ARG in the stage to use its value",
                ),
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

    /// A difference from docker's result, said on stderr and in a comment where it is
    /// (once per instruction).
    fn note(&mut self, i: &Instruction, message: &str, hint: &str) {
        if !self.noted.insert(format!("{} {message}", i.line)) {
            return;
        }
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
            if !words::is_name(&name) {
                self.untranslatable(
                    i,
                    &format!("ARG {name:?} is not a name kiln's args take"),
                    "letters, digits and _, not starting with a digit (so $NAME can use it)",
                );
                continue;
            }
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
        let value = words::process(raw, self.escape, &|_| Name::Set);
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
        let set_by_env = self.env_value(name).is_some();
        // What Docker gives it here: its default; in a stage, without one, the default
        // before the first FROM; else nothing.
        let value = match (default, self.stages.is_empty()) {
            (Some(d), _) => d,
            (None, false) => self.global.get(name).cloned().unwrap_or_default(),
            (None, true) => String::new(),
        };
        match self.stages.last_mut() {
            None => {
                self.global.insert(name.to_owned(), value.clone());
            }
            Some(stage) if !stage.scope.declared.contains_key(name) => {
                let place = stage.scope.declared.len();
                stage.scope.declared.insert(name.to_owned(), place);
                if !set_by_env {
                    stage.scope.run_args.insert(place, name.to_owned());
                }
            }
            Some(_) => {}
        }
        let Some(&at) = self.arg_index.get(name) else {
            // Docker gives an ARG without a default an empty value; kiln would ask for
            // --arg, so the empty value is written out.
            self.arg_index.insert(name.to_owned(), self.args.len());
            self.arg_lines.insert(name.to_owned(), i.line);
            self.args.push((name.to_owned(), value));
            return;
        };
        let spec = self.args[at].1.clone();
        if spec != value {
            let line = self.arg_lines[name];
            self.note(
                i,
                &format!("ARG {name} is {value:?} here for Docker, {spec:?} in the spec"),
                &format!(
                    "kiln's args are the whole spec's, with one default, the ARG's of line \
                     {line}: give each ARG {name} the same default (--arg still sets all)"
                ),
            );
        }
    }

    fn env(&mut self, i: &Instruction) {
        // Every value is read with the variables as they were before this ENV.
        let mut pairs = Vec::new();
        for (name, raw) in self.pairs(i) {
            // Docker refuses these too (an empty name, `=` or blanks in it).
            if name.is_empty()
                || name.contains(|c: char| c == '=' || c.is_whitespace() || c.is_control())
            {
                return self.untranslatable(
                    i,
                    &format!("ENV {name:?} is not a variable name"),
                    "write ENV NAME=value",
                );
            }
            let word = words::process(raw.trim(), self.escape, &|n| self.name_kind(n));
            let uses = word.names.clone();
            let value = self.reported(i, word);
            pairs.push((name, value, uses));
        }
        let pairs = last_of_each_name(pairs);
        let pairs = match old_values_first(&pairs) {
            Some(order) => order.into_iter().map(|at| pairs[at].clone()).collect(),
            None => {
                self.note(
                    i,
                    "the values of this ENV use each other's earlier values",
                    "kiln's env: entries see the entries above them, so the spec gives the \
                     later ones the new values",
                );
                pairs
            }
        };
        let pairs: Vec<(String, String)> = pairs.into_iter().map(|(n, v, _)| (n, v)).collect();
        // ENV before any step is the stage's (or, alone, the spec's) env: the same
        // variables for every step and the image, as the docs' example writes it. A name it
        // already holds goes in a step, since a mapping holds a name once. (Until the first
        // step, the stage's own ENV names are its env's.)
        let taken = pairs.iter().any(|(n, _)| self.scope().env.contains_key(n));
        for (name, value) in &pairs {
            let scope = self.scope();
            scope.env.insert(name.clone(), value.clone());
            if let Some(place) = scope.declared.get(name) {
                scope.run_args.remove(place);
            }
        }
        let stage = self.stage();
        match stage.steps.is_empty() && self.pending.is_empty() && !taken {
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
                let key = words::process(k, self.escape, &|_| Name::Set).text;
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
        let value = self.env_value(name).cloned().or_else(|| {
            let arg = self.arg_index.get(name).map(|&at| &self.args[at]);
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

/// One ENV's pairs (name, value, names it uses) with a name set twice kept at its last
/// place: `ENV A=1 A=2` sets A to 2.
fn last_of_each_name(pairs: Vec<EnvPair>) -> Vec<EnvPair> {
    let last: HashMap<&str, usize> = pairs
        .iter()
        .enumerate()
        .map(|(at, (name, _, _))| (name.as_str(), at))
        .collect();
    let keep: Vec<bool> = (0..pairs.len())
        .map(|at| last[pairs[at].0.as_str()] == at)
        .collect();
    pairs
        .into_iter()
        .zip(keep)
        .filter_map(|(pair, keep)| keep.then_some(pair))
        .collect()
}

type EnvPair = (String, String, Vec<String>);

/// An order of one ENV's pairs in which every value that uses a name the same ENV sets
/// comes above that name's entry, so that kiln's env (each entry sees those above it)
/// gives it the earlier value, as Docker does: `ENV A=2 B=$A` is `B: ${A}` then `A: "2"`.
/// Otherwise the Dockerfile's order; `None` when the values use each other's.
fn old_values_first(pairs: &[EnvPair]) -> Option<Vec<usize>> {
    let index: HashMap<&str, usize> = pairs
        .iter()
        .enumerate()
        .map(|(at, (name, _, _))| (name.as_str(), at))
        .collect();
    // `before[a]`: the entries that must come after entry a; `waiting[b]`: how many
    // entries must come before b.
    let mut after: Vec<Vec<usize>> = vec![Vec::new(); pairs.len()];
    let mut waiting = vec![0usize; pairs.len()];
    for (user, (_, _, uses)) in pairs.iter().enumerate() {
        let targets: BTreeSet<usize> = uses
            .iter()
            .filter_map(|n| index.get(n.as_str()).copied())
            .filter(|&set| set != user)
            .collect();
        for set in targets {
            after[user].push(set);
            waiting[set] += 1;
        }
    }
    let mut ready: BTreeSet<usize> = (0..pairs.len()).filter(|&at| waiting[at] == 0).collect();
    let mut order = Vec::with_capacity(pairs.len());
    while let Some(at) = ready.pop_first() {
        order.push(at);
        for &next in &after[at] {
            waiting[next] -= 1;
            if waiting[next] == 0 {
                ready.insert(next);
            }
        }
    }
    (order.len() == pairs.len()).then_some(order)
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
    add_new(&mut into.expose, &stage.expose);
    add_new(&mut into.volumes, &stage.volumes);
    // A label set again takes its new value where it stood.
    let mut places: HashMap<String, usize> = into
        .labels
        .iter()
        .enumerate()
        .map(|(at, (k, _))| (k.clone(), at))
        .collect();
    for (k, v) in &stage.labels {
        match places.get(k) {
            Some(&at) => into.labels[at].1 = v.clone(),
            None => {
                places.insert(k.clone(), into.labels.len());
                into.labels.push((k.clone(), v.clone()));
            }
        }
    }
    if stage.stop_signal.is_some() {
        into.stop_signal = stage.stop_signal.clone();
    }
    if stage.healthcheck.is_some() {
        into.healthcheck = stage.healthcheck.clone();
    }
}

/// `more` added to `list`, each value once.
fn add_new(list: &mut Vec<String>, more: &[String]) {
    let mut seen: HashSet<String> = list.iter().cloned().collect();
    for value in more {
        if seen.insert(value.clone()) {
            list.push(value.clone());
        }
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
