//! User and group names → numeric IDs (and the user's home directory, Docker's `HOME`),
//! read from a rootfs's `/etc/passwd` and `/etc/group`.
//!
//! The files come from an image, so they are untrusted: they are opened inside the root
//! (never through a symlink that leaves it), read with a size bound, and IDs are parsed as
//! `u32` with overflow an error (CVE-2024-9676, CVE-2024-40635).
//!
//! Here, below the build engine, because a build step's `user:` and `kiln run --user`
//! must find the same IDs: both are containers of the same image.
//!
//! Finding the files takes a read-only mount of the image's layers (about 1 ms). A
//! container's start asks the same question of the same layers every time, so the answer
//! is remembered in the store ([`resolve_in_image_remembered`]): layer dirs never change.

use std::io::Read;
use std::path::Path;

use nix::fcntl::OFlag;

use kiln_layer::inroot::{Resolve, Root};

/// The most kiln reads of `/etc/passwd` or `/etc/group`.
const MAX_DB_BYTES: u64 = 4 << 20;

/// A resolved `user:` value.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    /// The home directory of the user's passwd entry; `/` when it has none (or an empty
    /// one), as runc and Docker do.
    pub home: String,
}

/// The home of a user without one.
const NO_HOME: &str = "/";

impl User {
    /// Root by number, without a lookup: for owning files, where only the IDs matter.
    pub const ROOT: User = User {
        uid: 0,
        gid: 0,
        groups: Vec::new(),
        home: String::new(),
    };
}

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error(transparent)]
    Mount(#[from] kiln_runtime::RuntimeError),
    #[error("user {0:?} not found in the image's /etc/passwd")]
    UnknownUser(String),
    #[error("group {0:?} not found in the image's /etc/group")]
    UnknownGroup(String),
    #[error("{0:?} is not a valid user: IDs are numbers from 0 to 4294967295")]
    BadId(String),
}

/// True when `spec` needs no lookup and means root.
pub fn is_root(spec: &str) -> bool {
    matches!(spec, "" | "0" | "root" | "0:0" | "root:root")
}

/// Resolves `USER[:GROUP]` (root when `None`) inside an image by reading its /etc/passwd
/// and /etc/group through a private, read-only mount of its layers. Root needs no entry (it is 0:0
/// without supplementary groups, also in an image without /etc/passwd); its entry is read
/// only for its home.
pub fn resolve_in_image(
    overlay: &kiln_runtime::Overlay,
    user: Option<&str>,
) -> Result<User, UserError> {
    let user = user.unwrap_or("");
    kiln_runtime::with_overlay_read_only(overlay, |root| {
        if is_root(user) {
            let passwd = read_db(root, "etc/passwd");
            return Ok(User {
                home: home(find_entry(&passwd, "0", 2).as_deref()),
                ..User::ROOT
            });
        }
        resolve(root, user)
    })?
}

/// What [`resolve_in_image_remembered`] keeps: the question with its answer, so an entry
/// is only ever taken for the question it answers.
#[derive(serde::Serialize, serde::Deserialize)]
struct Remembered {
    lowers: Vec<String>,
    user: String,
    answer: User,
}

/// [`resolve_in_image`], remembered in the store for the overlay's layers and `user`: the
/// layers' dirs are content-addressed and never change, so neither does the answer. Only
/// answers are kept, not errors; `kiln gc` forgets them all when it removes a layer dir.
pub fn resolve_in_image_remembered(
    store: &kiln_store::Store,
    overlay: &kiln_runtime::Overlay,
    user: Option<&str>,
) -> Result<User, UserError> {
    let user = user.unwrap_or("");
    let question = |entry: &Remembered| entry.lowers == overlay.lowers && entry.user == user;
    let mut key = b"kiln user lookup v1\0".to_vec();
    for lower in &overlay.lowers {
        key.extend_from_slice(lower.as_bytes());
        key.push(b'\n');
    }
    key.push(0);
    key.extend_from_slice(user.as_bytes());
    let id = kiln_store::Digest::of_bytes(&key);
    let kept = store
        .read_cache_file(kiln_store::USER_LOOKUPS, &id)
        .ok()
        .flatten()
        .and_then(|bytes| serde_json::from_slice::<Remembered>(&bytes).ok())
        .filter(question);
    if let Some(entry) = kept {
        return Ok(entry.answer);
    }
    let answer = resolve_in_image(overlay, Some(user))?;
    let entry = Remembered {
        lowers: overlay.lowers.clone(),
        user: user.to_owned(),
        answer,
    };
    // Failing to remember costs only the next start a mount.
    if let Ok(bytes) = serde_json::to_vec(&entry) {
        let _ = store.write_cache_file(kiln_store::USER_LOOKUPS, &id, &bytes);
    }
    Ok(entry.answer)
}

/// Resolves `USER[:GROUP]` (names or numbers) against the rootfs mounted at `root`.
pub fn resolve(root: &Path, spec: &str) -> Result<User, UserError> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = read_db(root, "etc/passwd");
    let entry = find_entry(&passwd, user, 2);
    let uid = match (parse_id(user)?, &entry) {
        (Some(id), _) => id,
        (None, Some(fields)) => {
            parse_id(fields[2])?.ok_or_else(|| UserError::BadId(fields[2].into()))?
        }
        (None, None) => return Err(UserError::UnknownUser(user.into())),
    };
    let primary = match &entry {
        Some(fields) => parse_id(fields[3])?.unwrap_or(0),
        None => 0,
    };
    let groups_db = read_db(root, "etc/group");
    let gid = match group {
        None => primary,
        Some(g) => match parse_id(g)? {
            Some(id) => id,
            None => {
                let fields = find_entry(&groups_db, g, 2)
                    .ok_or_else(|| UserError::UnknownGroup(g.into()))?;
                parse_id(fields[2])?.ok_or_else(|| UserError::BadId(fields[2].into()))?
            }
        },
    };
    let name = entry.as_ref().map(|f| f[0]).unwrap_or(user);
    Ok(User {
        uid,
        gid,
        groups: supplementary_groups(&groups_db, name, gid),
        home: home(entry.as_deref()),
    })
}

/// The home field of a passwd entry, or [`NO_HOME`].
fn home(entry: Option<&[&str]>) -> String {
    entry
        .and_then(|fields| fields.get(5))
        .filter(|home| !home.is_empty())
        .map_or(NO_HOME, |home| home)
        .to_string()
}

/// `Some(id)` for a decimal ID, `None` for a name, an error for a number that overflows.
fn parse_id(s: &str) -> Result<Option<u32>, UserError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    s.parse().map(Some).map_err(|_| UserError::BadId(s.into()))
}

/// The line whose first field is `name` (or whose ID field equals `name`), split on `:`.
fn find_entry<'a>(db: &'a str, name: &str, id_field: usize) -> Option<Vec<&'a str>> {
    db.lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() > id_field + 1)
        .find(|f| f[0] == name)
        .or_else(|| {
            db.lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() > id_field + 1 && f[id_field] == name)
        })
}

fn supplementary_groups(db: &str, user: &str, primary: u32) -> Vec<u32> {
    let mut out: Vec<u32> = db
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 4 && f[3].split(',').any(|m| m == user))
        .filter_map(|f| f[2].parse().ok())
        .filter(|&g| g != primary)
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Reads a file inside `root` without following symlinks out of it; a missing or
/// unreadable file reads as empty, as in a scratch image.
fn read_db(root: &Path, rel: &str) -> String {
    let open = || -> std::io::Result<std::fs::File> {
        let flags = OFlag::O_RDONLY | OFlag::O_NOCTTY | OFlag::O_NONBLOCK;
        let fd = Root::open(root)?.open_at(rel.as_bytes(), flags, Resolve::InRoot)?;
        Ok(std::fs::File::from(fd))
    };
    let mut text = String::new();
    if let Ok(file) = open() {
        if file.metadata().is_ok_and(|m| m.is_file()) {
            let mut bytes = Vec::new();
            let _ = file.take(MAX_DB_BYTES).read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rootfs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nwww:x:33:34::/var/www:/bin/false\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("etc/group"),
            "root:x:0:\nwww:x:34:\nstaff:x:50:www,bob\n",
        )
        .unwrap();
        dir
    }

    #[test]
    fn names_and_numbers_resolve() {
        let r = rootfs();
        assert_eq!(
            resolve(r.path(), "www").unwrap(),
            User {
                uid: 33,
                gid: 34,
                groups: vec![50],
                home: "/var/www".into(),
            }
        );
        assert_eq!(resolve(r.path(), "www:staff").unwrap().gid, 50);
        assert_eq!(
            resolve(r.path(), "1000").unwrap(),
            User {
                uid: 1000,
                gid: 0,
                groups: vec![],
                home: "/".into(),
            }
        );
        assert_eq!(resolve(r.path(), "1000:7").unwrap().gid, 7);
    }

    #[test]
    fn homes_come_from_the_passwd_entry() {
        let r = rootfs();
        assert_eq!(resolve(r.path(), "0").unwrap().home, "/root");
        assert_eq!(resolve(r.path(), "root:www").unwrap().home, "/root");
        // By number too, as runc looks users up.
        assert_eq!(resolve(r.path(), "33").unwrap().home, "/var/www");
        std::fs::write(r.path().join("etc/passwd"), "root:x:0:0::::\nshort:x:5:5\n").unwrap();
        assert_eq!(resolve(r.path(), "0").unwrap().home, "/");
        assert_eq!(resolve(r.path(), "5").unwrap().home, "/");
        std::fs::remove_file(r.path().join("etc/passwd")).unwrap();
        assert_eq!(resolve(r.path(), "0").unwrap().home, "/");
    }

    #[test]
    fn bad_users_are_errors() {
        let r = rootfs();
        assert!(matches!(
            resolve(r.path(), "nobody"),
            Err(UserError::UnknownUser(_))
        ));
        assert!(matches!(
            resolve(r.path(), "www:nogroup"),
            Err(UserError::UnknownGroup(_))
        ));
        assert!(matches!(
            resolve(r.path(), "4294967296"),
            Err(UserError::BadId(_))
        ));
    }

    #[test]
    fn passwd_symlink_out_of_root_is_not_followed() {
        let r = rootfs();
        let victim = tempfile::tempdir().unwrap();
        std::fs::write(victim.path().join("passwd"), "evil:x:0:0::/:/bin/sh\n").unwrap();
        std::fs::remove_file(r.path().join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink(victim.path().join("passwd"), r.path().join("etc/passwd"))
            .unwrap();
        assert!(matches!(
            resolve(r.path(), "evil"),
            Err(UserError::UnknownUser(_))
        ));
    }

    #[test]
    fn users_resolve_through_a_read_only_mount_of_the_image() {
        require_root!("overlayfs in a private mount namespace");
        let tmp = tempfile::tempdir().unwrap();
        let layers = tmp.path().join("layers");
        std::fs::create_dir(&layers).unwrap();
        std::fs::rename(rootfs().keep(), layers.join("base")).unwrap();
        for dir in ["upper", "work"] {
            std::fs::create_dir(tmp.path().join(dir)).unwrap();
        }
        let overlay = kiln_runtime::Overlay {
            layers_dir: layers,
            lowers: vec!["base".into()],
            upper: tmp.path().join("upper"),
            work: tmp.path().join("work"),
        };
        let www = resolve_in_image(&overlay, Some("www")).unwrap();
        assert_eq!((www.uid, www.gid, www.groups), (33, 34, vec![50]));
        assert_eq!(resolve_in_image(&overlay, None).unwrap().home, "/root");
        assert!(matches!(
            resolve_in_image(&overlay, Some("nobody")),
            Err(UserError::UnknownUser(_))
        ));
    }

    #[test]
    fn lookups_are_remembered_per_layers_and_user_and_only_for_that_question() {
        require_root!("overlayfs in a private mount namespace");
        let tmp = tempfile::tempdir().unwrap();
        let store = kiln_store::Store::open(&tmp.path().join("store")).unwrap();
        let layers = store.layers_dir();
        std::fs::rename(rootfs().keep(), layers.join("base")).unwrap();
        std::fs::create_dir(layers.join("empty")).unwrap();
        for dir in ["upper", "work"] {
            std::fs::create_dir(tmp.path().join(dir)).unwrap();
        }
        let overlay = |lowers: &[&str]| kiln_runtime::Overlay {
            layers_dir: layers.clone(),
            lowers: lowers.iter().map(|l| l.to_string()).collect(),
            upper: tmp.path().join("upper"),
            work: tmp.path().join("work"),
        };
        let remembered = || {
            let dir = store.cache_dir().join(kiln_store::USER_LOOKUPS);
            std::fs::read_dir(dir).map_or(0, |d| d.count())
        };
        let base = overlay(&["base"]);
        let www = resolve_in_image_remembered(&store, &base, Some("www")).unwrap();
        assert_eq!(www, resolve_in_image(&base, Some("www")).unwrap());
        assert_eq!(remembered(), 1);
        // Errors are not remembered.
        assert!(resolve_in_image_remembered(&store, &base, Some("nobody")).is_err());
        assert_eq!(remembered(), 1);
        // The answer now comes from the store: a changed file (layer dirs never change, so
        // only a test can) is not read again for the same question...
        std::fs::write(layers.join("base/etc/passwd"), "www:x:77:77::/w:/bin/sh\n").unwrap();
        let again = resolve_in_image_remembered(&store, &base, Some("www")).unwrap();
        assert_eq!(again.uid, 33);
        // ...but another user, or the same user over other layers, is a question of its own.
        let other = overlay(&["empty", "base"]);
        assert_eq!(
            resolve_in_image_remembered(&store, &other, Some("www"))
                .unwrap()
                .uid,
            77
        );
        assert_eq!(
            resolve_in_image_remembered(&store, &base, Some("www:www"))
                .unwrap()
                .uid,
            77
        );
        assert_eq!(remembered(), 3);
        // An entry that does not parse is asked again and replaced.
        for entry in std::fs::read_dir(store.cache_dir().join(kiln_store::USER_LOOKUPS)).unwrap() {
            std::fs::write(entry.unwrap().path(), b"{not json").unwrap();
        }
        assert_eq!(
            resolve_in_image_remembered(&store, &base, Some("www"))
                .unwrap()
                .uid,
            77
        );
        assert_eq!(remembered(), 3);
    }
}
