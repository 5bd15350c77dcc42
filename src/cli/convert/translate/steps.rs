//! `RUN`, `COPY` and `ADD`: the instructions that become build steps with modifiers.

use std::collections::HashSet;
use std::io::Read;
use std::path::Path;

use super::super::parse::{Flag, Instruction};
use super::super::words::{self, Name};
use super::super::yaml::{Entry, Item, Node};
use super::{flag, warning, Converter, Helper, Warning, MAX_SPEC_BYTES};

/// Shells that read `: "$NAME"` as a command that does nothing.
const POSIX_SHELLS: [&str; 6] = ["sh", "bash", "ash", "dash", "zsh", "ksh"];

impl Converter<'_> {
    pub(super) fn run(&mut self, i: &Instruction) -> Result<(), Warning> {
        let Some((script, is_string)) = self.script(i) else {
            return Ok(());
        };
        let shell = self.run_shell();
        let script = match script {
            Node::Scalar(text) => Node::Scalar(self.with_stage_args(i, text, shell.as_deref())?),
            list => {
                self.exec_form_args(i);
                list
            }
        };
        let mut entries = vec![Entry::new("run", script)];
        if let (true, Some(shell)) = (is_string, shell) {
            entries.push(Entry::new("shell", Node::list(&shell)));
        }
        for f in &i.flags {
            self.run_flag(i, f, &mut entries);
        }
        self.step(entries);
        Ok(())
    }

    /// Docker's RUN has every ARG its stage declares in its environment (unless an ENV
    /// sets the name); a kiln run step has the args its script names. A script that names
    /// only some gets a first line naming the others, `: "$NAME"` (a command that does
    /// nothing), so that a program reading one from its environment (apt's
    /// DEBIAN_FRONTEND, npm's NODE_ENV, make's CC) still finds it.
    fn with_stage_args(
        &mut self,
        i: &Instruction,
        script: String,
        shell: Option<&[String]>,
    ) -> Result<String, Warning> {
        let named: HashSet<&str> = words::shell_names(&script).into_iter().collect();
        self.note_other_stages_args(i, &named);
        let missing = self.unnamed_stage_args(&named);
        if missing.is_empty() {
            return Ok(script);
        }
        let program = shell.and_then(|s| s.first()).map(|p| base_name(p));
        if program.is_some_and(|p| !POSIX_SHELLS.contains(&p)) {
            self.note(
                i,
                &format!("RUN does not get the ARGs {} here", missing.join(", ")),
                "Docker puts the stage's ARGs in every RUN's environment, kiln only those \
                 a script names: name them in the script",
            );
            return Ok(script);
        }
        let line = format!(
            ": {}\n",
            missing
                .iter()
                .map(|a| format!("\"${a}\""))
                .collect::<Vec<_>>()
                .join(" ")
        );
        self.written += line.len();
        if self.written > MAX_SPEC_BYTES {
            return Err(warning(
                i,
                "the spec would be larger than kiln loads",
                Some("too many ARGs in too many RUNs for one spec".into()),
            ));
        }
        self.pending.push(format!(
            "Dockerfile:{}: the first line names ARGs the script does not, so the step has \
             them in its environment, as Docker gives every RUN its stage's ARGs",
            i.line
        ));
        Ok(format!("{line}{script}"))
    }

    /// An exec-form RUN: a kiln list run gets no args in its environment.
    fn exec_form_args(&mut self, i: &Instruction) {
        let missing = self.unnamed_stage_args(&HashSet::new());
        if !missing.is_empty() {
            self.note(
                i,
                &format!(
                    "RUN in exec form does not get the ARGs {} here",
                    missing.join(", ")
                ),
                "Docker puts the stage's ARGs in every RUN's environment, kiln only in a \
                 string run:'s that names them: write the RUN in shell form",
            );
        }
    }

    /// The current stage's ARGs that a script naming `named` would not get, in the order
    /// declared.
    fn unnamed_stage_args(&self, named: &HashSet<&str>) -> Vec<String> {
        let stage = self.stages.last().expect("FROM came first");
        stage
            .scope
            .run_args
            .values()
            .filter(|a| !named.contains(a.as_str()))
            .cloned()
            .collect()
    }

    /// Names a script uses that are ARGs of other stages: unset for Docker's RUN, the
    /// arg's value for kiln's step, which cannot be told apart in a script kiln keeps as
    /// written.
    fn note_other_stages_args(&mut self, i: &Instruction, named: &HashSet<&str>) {
        let mut others: Vec<&str> = named
            .iter()
            .copied()
            .filter(|n| self.name_kind(n) == Name::OtherStagesArg)
            .collect();
        others.sort_unstable();
        for name in others {
            self.note(
                i,
                &format!("RUN uses ${name}, an ARG that this stage does not declare"),
                "Docker's RUN sees it unset (or the base image's variable), the spec's \
                 step gets the arg's value: declare it with ARG in the stage",
            );
        }
    }

    /// The `run:` value, and whether it is a script (a string) rather than a list.
    fn script(&mut self, i: &Instruction) -> Option<(Node, bool)> {
        if let Some(argv) = &i.exec {
            if argv.is_empty() {
                self.untranslatable(i, "RUN [] runs nothing", "remove it");
                return None;
            }
            // Docker runs an exec form as written; kiln would substitute ${NAME} in it.
            let argv: Vec<String> = argv.iter().map(|a| words::literal(a)).collect();
            return Some((Node::list(&argv), false));
        }
        let script = match i.heredocs.as_slice() {
            [] => i.args.trim().to_owned(),
            [only] if words_are_one_marker(&i.args) => {
                if only.body().starts_with("#!") {
                    self.untranslatable(
                        i,
                        "a RUN heredoc run by its #! interpreter is not translated",
                        "kiln gives a string run: to the shell: write the script with a \
                         copy: step and run it",
                    );
                    return None;
                }
                // Docker runs a lone heredoc's body as the script.
                only.body()
            }
            // Otherwise the shell gets the command with its heredocs, as Docker gives it.
            docs => {
                let mut text = format!("{}\n", i.args.trim());
                for doc in docs {
                    text.push_str(&doc.raw);
                    text.push_str(&doc.delimiter);
                    text.push('\n');
                }
                text
            }
        };
        if script.trim().is_empty() {
            self.untranslatable(i, "RUN without a command", "remove it");
            return None;
        }
        Some((Node::Scalar(script), true))
    }

    fn run_flag(&mut self, i: &Instruction, f: &Flag, entries: &mut Vec<Entry>) {
        let value = f.value.clone().unwrap_or_default();
        match (f.name.as_str(), value.as_str()) {
            ("mount", mount) => self.mount(i, mount, entries),
            ("network", "none" | "host") => entries.push(Entry::scalar("network", &value)),
            ("network", "default") | ("security", "sandbox") => {}
            ("security", "insecure") => {
                self.pending.push(format!(
                    "Dockerfile:{}: --security=insecure is privileged: true",
                    i.line
                ));
                entries.push(Entry::new("privileged", Node::Plain("true".into())));
            }
            _ => self.note(
                i,
                &format!("RUN --{}={value} is left out", f.name),
                "kiln has no such run step option",
            ),
        }
    }

    /// `--mount=type=cache|secret,…`: `cache:` and `secrets:`; other types are left out.
    fn mount(&mut self, i: &Instruction, spec: &str, entries: &mut Vec<Entry>) {
        let options: Vec<(String, String)> = spec
            .split(',')
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => (k.to_owned(), v.to_owned()),
                None => (kv.to_owned(), "true".to_owned()),
            })
            .collect();
        let get = |names: &[&str]| {
            options
                .iter()
                .find(|(k, _)| names.contains(&k.as_str()))
                .map(|(_, v)| v.clone())
        };
        let target = get(&["target", "dst", "destination"]);
        match (get(&["type"]).as_deref().unwrap_or("bind"), target) {
            ("cache", Some(target)) => {
                push_to_list(entries, "cache", Item::plain(&target));
            }
            ("secret", target) => {
                let id = get(&["id"])
                    .or_else(|| target.as_deref().map(|t| base_name(t).to_owned()))
                    .unwrap_or_default();
                let variable = env_name(&id);
                let mut secret = vec![Entry::scalar("id", &id), Entry::scalar("env", &variable)];
                if let Some(t) = target {
                    secret.push(Entry::scalar("target", &t));
                }
                if let Some(env) = get(&["env"]) {
                    self.note(
                        i,
                        &format!("the secret {id:?} as variable {env} is a file here"),
                        "kiln's secrets are files (/run/secrets/ID unless target: says)",
                    );
                }
                self.pending.push(format!(
                    "Dockerfile:{}: secret {id:?} comes from ${variable} of kiln build's \
                     environment (or write source: FILE)",
                    i.line
                ));
                push_to_list(
                    entries,
                    "secrets",
                    Item {
                        comments: Vec::new(),
                        node: Node::Map(secret),
                    },
                );
            }
            (kind, _) => self.note(
                i,
                &format!("RUN --mount=type={kind} is left out"),
                "kiln's run steps take cache: and secrets: mounts; copy files in with copy:",
            ),
        }
    }

    pub(super) fn copy(&mut self, i: &Instruction) {
        if !i.heredocs.is_empty() {
            return self.copy_heredoc(i);
        }
        let raw = match &i.exec {
            Some(list) => list.iter().map(|w| format!("'{w}'")).collect(),
            None => words::split(&i.args, self.escape),
        };
        if raw.len() < 2 {
            return self.untranslatable(i, "COPY needs a source and a destination", "");
        }
        let words: Vec<String> = raw.iter().map(|w| self.word(i, w)).collect();
        let (dest, sources) = words.split_last().expect("two words at least");
        let from = flag(&i.flags, "from").and_then(|f| f.value.clone());
        if let Some(problem) = source_problem(i, sources, from.is_some()) {
            return self.untranslatable(i, &problem.0, &problem.1);
        }
        let mut entries = Vec::new();
        let sources = match from {
            Some(from) => {
                let stage = self.copy_from(&from);
                entries.push(Entry::scalar("from", &stage));
                sources.to_vec()
            }
            None if i.keyword == "ADD" => match self.add_archive(i, sources) {
                Some(stage) => {
                    entries.push(Entry::scalar("from", &stage));
                    vec!["/".to_owned()]
                }
                None => context_sources(sources),
            },
            None => context_sources(sources),
        };
        let copy = match sources.as_slice() {
            [one] => Node::Scalar(one.clone()),
            many => Node::list(many),
        };
        entries.insert(0, Entry::new("copy", copy));
        entries.push(Entry::scalar("to", dest));
        self.copy_flags(i, &mut entries);
        self.step(entries);
    }

    fn copy_flags(&mut self, i: &Instruction, entries: &mut Vec<Entry>) {
        for f in &i.flags {
            let value = f.value.clone().unwrap_or_default();
            match f.name.as_str() {
                "from" => {}
                "chown" => {
                    let owner = self.word(i, &value);
                    entries.push(Entry::scalar("owner", &docker_owner(&owner)));
                }
                "chmod" => match octal_mode(&value) {
                    Some(mode) => entries.push(Entry::scalar("mode", &mode)),
                    None => self.note(
                        i,
                        &format!("--chmod={value} is left out"),
                        "kiln's mode: takes an octal mode such as 0755",
                    ),
                },
                "link" => self.pending.push(format!(
                    "Dockerfile:{}: --link changes nothing here (a copy: step is its own \
                     layer either way)",
                    i.line
                )),
                name => self.note(
                    i,
                    &format!("{} --{name} is left out", i.keyword),
                    "kiln's copy: has from:, to:, mode: and owner:",
                ),
            }
        }
    }

    /// The stage a `--from` names: an earlier stage, or an image, which kiln reads
    /// through a stage of its own (`copy … from:` takes stages and contexts).
    fn copy_from(&mut self, from: &str) -> String {
        if let Some(index) = self.stage_index(from) {
            return self.stages[index].name.clone();
        }
        self.helper(
            &format!("image-{}", super::stage_name(from)),
            from,
            &format!("COPY --from={from}: kiln copies from stages, so the image is one"),
        )
    }

    /// The helper stage reading `from`, made once; its name is `name`, numbered when two
    /// sources make the same name (`a:b` and `a-b`) or a stage has it.
    fn helper(&mut self, name: &str, from: &str, comment: &str) -> String {
        if let Some(&at) = self.helper_index.get(from) {
            return self.helpers[at].name.clone();
        }
        let mut unique = name.to_owned();
        let mut n = 1;
        while self.helper_names.contains(&unique) || self.kiln_names.contains(&unique) {
            n += 1;
            unique = format!("{name}-{n}");
        }
        self.helper_names.insert(unique.clone());
        self.helper_index
            .insert(from.to_owned(), self.helpers.len());
        self.helpers.push(Helper {
            name: unique.clone(),
            from: from.to_owned(),
            comment: comment.to_owned(),
        });
        unique
    }

    /// `ADD` of one local archive, which Docker unpacks: kiln unpacks it as a stage
    /// `from: rootfs:FILE` (gzip, zstd or plain tar) whose files the step copies.
    fn add_archive(&mut self, i: &Instruction, sources: &[String]) -> Option<String> {
        let archives: Vec<(&String, Archive)> = sources
            .iter()
            .map(|s| {
                (
                    s,
                    archive_kind(&self.context.join(s.trim_start_matches('/'))),
                )
            })
            .filter(|(_, kind)| *kind != Archive::No)
            .collect();
        match archives.as_slice() {
            [] => None,
            [(src, Archive::Unpackable)] if sources.len() == 1 => {
                let path = src.trim_start_matches('/');
                let name = format!("unpack-{}", super::stage_name(base_name(path)));
                let comment = format!(
                    "Dockerfile:{}: ADD {path} unpacks the archive: kiln does it as this stage",
                    i.line
                );
                Some(self.helper(&name, &format!("rootfs:{path}"), &comment))
            }
            _ => {
                self.note(
                    i,
                    "ADD of this archive is copied, not unpacked",
                    "kiln unpacks one gzip, zstd or plain tar per ADD; unpack others in a run: step",
                );
                None
            }
        }
    }

    /// `COPY <<EOF /path`: kiln's copy reads files, so a run step writes it.
    fn copy_heredoc(&mut self, i: &Instruction) {
        let words = words::split(&i.args, self.escape);
        let dest = words.last().map(|d| self.word(i, d)).unwrap_or_default();
        let scratch = self.stage().from == "scratch";
        if i.heredocs.len() != 1 || words.len() != 2 || scratch {
            return self.untranslatable(
                i,
                "COPY of a heredoc is not translated here",
                "kiln copies files: put the text in a file of the context and copy it",
            );
        }
        let doc = &i.heredocs[0];
        let target = match dest.ends_with('/') {
            true => format!("{dest}{}", doc.delimiter),
            false => dest,
        };
        let quote = if doc.expand { "" } else { "'" };
        let mut script = format!(
            "mkdir -p \"$(dirname '{target}')\"\ncat > '{target}' <<{quote}{d}{quote}\n{}{d}\n",
            doc.body(),
            d = doc.delimiter
        );
        for f in &i.flags {
            let value = f.value.clone().unwrap_or_default();
            match (f.name.as_str(), octal_mode(&value)) {
                ("chmod", Some(mode)) => script.push_str(&format!("chmod {mode} '{target}'\n")),
                ("chown", _) => script.push_str(&format!("chown {value} '{target}'\n")),
                _ => self.note(
                    i,
                    &format!("COPY --{} is left out", f.name),
                    "a heredoc is written by a run: step",
                ),
            }
        }
        self.pending.push(format!(
            "Dockerfile:{}: COPY <<{}: written by a run: step (kiln's copy reads files)",
            i.line, doc.delimiter
        ));
        self.step(vec![Entry::new("run", Node::Scalar(script))]);
    }
}

/// `<<EOF` (or `<<-'EOF'`, …) and nothing else.
fn words_are_one_marker(args: &str) -> bool {
    let args = args.trim();
    args.starts_with("<<") && !args.contains(char::is_whitespace)
}

/// Why sources cannot be copied as they are: URLs, wildcards, paths out of the context.
fn source_problem(i: &Instruction, sources: &[String], from: bool) -> Option<(String, String)> {
    let add = i.keyword == "ADD";
    for s in sources {
        if s.contains("://") || s.starts_with("git@") {
            let message = format!("{} of a URL has no kiln equivalent", i.keyword);
            let hint = "fetch it in a run: step (curl, wget, git), or download it into \
                        the build context and copy it";
            return Some((message, hint.into()));
        }
        if s.contains(['*', '?', '[']) {
            return Some((
                format!("{} {s}: kiln's copy takes no wildcards", i.keyword),
                "name the files, or copy their directory".into(),
            ));
        }
        if !from && s.split('/').any(|part| part == "..") {
            return Some((
                format!("{s} is outside the build context"),
                "docker refuses it too".into(),
            ));
        }
    }
    let _ = add;
    None
}

/// Context sources as kiln takes them: Docker reads `/x` as the context's `x`.
fn context_sources(sources: &[String]) -> Vec<String> {
    sources
        .iter()
        .map(|s| match s.trim_start_matches('/') {
            "" => ".".to_owned(),
            rest => rest.to_owned(),
        })
        .collect()
}

/// Docker's `--chown=55` means `55:55` (kiln's would take the passwd entry's group, or 0);
/// a name alone gets its primary group in both.
fn docker_owner(owner: &str) -> String {
    match !owner.is_empty() && owner.chars().all(|c| c.is_ascii_digit()) {
        true => format!("{owner}:{owner}"),
        false => owner.to_owned(),
    }
}

/// `755` as kiln's `"0755"`; a symbolic mode (`u+x`) has no kiln form.
fn octal_mode(value: &str) -> Option<String> {
    let ok =
        !value.is_empty() && value.len() <= 4 && value.chars().all(|c| ('0'..='7').contains(&c));
    ok.then(|| format!("{value:0>4}"))
}

fn base_name(path: &str) -> &str {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(path)
}

/// A secret id as the name of a variable of `kiln build`'s environment.
fn env_name(id: &str) -> String {
    id.chars()
        .map(|c| match c.is_ascii_alphanumeric() {
            true => c.to_ascii_uppercase(),
            false => '_',
        })
        .collect()
}

fn push_to_list(entries: &mut Vec<Entry>, key: &str, item: Item) {
    match entries.iter_mut().find(|e| e.key == key) {
        Some(Entry {
            node: Node::List(items),
            ..
        }) => items.push(item),
        _ => entries.push(Entry::new(key, Node::List(vec![item]))),
    }
}

#[derive(Debug, PartialEq)]
enum Archive {
    No,
    /// gzip, zstd or plain tar: what `from: rootfs:` reads.
    Unpackable,
    /// xz or bzip2, which Docker unpacks and kiln's rootfs does not.
    Other,
}

/// Docker decides by content whether an ADD source is an archive, and so does this.
fn archive_kind(path: &Path) -> Archive {
    let Ok(mut file) = std::fs::File::open(path) else {
        return Archive::No;
    };
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return Archive::No;
    }
    let mut head = [0u8; 512];
    let n = file.read(&mut head).unwrap_or(0);
    let head = &head[..n];
    if head.starts_with(&[0x1f, 0x8b]) || head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Archive::Unpackable;
    }
    if n >= 262 && &head[257..262] == b"ustar" {
        return Archive::Unpackable;
    }
    if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) || head.starts_with(b"BZh") {
        return Archive::Other;
    }
    Archive::No
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_owners_and_markers() {
        assert_eq!(octal_mode("755").as_deref(), Some("0755"));
        assert_eq!(octal_mode("0640").as_deref(), Some("0640"));
        assert_eq!(octal_mode("u+x"), None);
        assert_eq!(docker_owner("55"), "55:55");
        assert_eq!(docker_owner("app:staff"), "app:staff");
        assert_eq!(docker_owner("app"), "app");
        assert!(words_are_one_marker("<<-'EOF'"));
        assert!(!words_are_one_marker("<<EOF sh"));
        assert_eq!(env_name("npm-token"), "NPM_TOKEN");
    }
}
