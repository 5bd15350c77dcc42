//! Spec mistakes reach the user as one located line with a hint, exit code 1, and leave
//! the store untouched.

mod common;

use common::{text, Env};

fn build_error(spec: &str) -> String {
    let env = Env::unprivileged();
    env.write("kiln.yaml", spec);
    let out = env.kiln(&["build", env.dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let images = env.kiln_ok(&["images", "--json"]);
    assert_eq!(images, "[]");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let dir = format!("{}/", env.dir.path().display());
    stderr.replace(&dir, "")
}

#[test]
fn each_kind_of_spec_error_is_located() {
    let cases = [
        (
            "from: scratch\nstesp: []\n",
            "kiln.yaml:2:1: unknown top-level key \"stesp\"",
            "did you mean \"steps\"?",
        ),
        (
            "from: scratch\nsteps:\n  - rnu: make\n",
            "kiln.yaml:3:5: unknown step key \"rnu\"",
            "did you mean \"run\"?",
        ),
        (
            "from: scratch\nfrom: scratch\n",
            "kiln.yaml:2:1:",
            "duplicate key \"from\"",
        ),
        (
            "from: scratch\nsteps:\n  - copy: a\n    to: /a\n    mode: \"0999\"\n",
            "kiln.yaml:5:11:",
            "invalid mode \"0999\"",
        ),
        (
            "from: scratch\nrun: { memory: 64X }\n",
            "kiln.yaml:2:16:",
            "unknown unit \"X\"",
        ),
        (
            "from: scratch\nrun: { capabilities: { add: [CAP_NET_BIND] } }\n",
            "kiln.yaml:2:30:",
            "did you mean \"NET_BIND_SERVICE\"?",
        ),
        (
            "from: scratch\nsteps:\n  - workdir: /srv/${GREETNG}\n",
            "kiln.yaml:3:14:",
            "undefined variable \"GREETNG\"",
        ),
        (
            "from: scratch\nsteps:\n  - run: make\n    shell: /bin/bash\n",
            "kiln.yaml:4:12:",
            "shell must be a list of strings, found a string",
        ),
        (
            "stages:\n  app:\n    from: builder\n  builder:\n    from: scratch\n",
            "kiln.yaml:3:11:",
            "stage \"builder\" is defined after \"app\"",
        ),
        (
            "from: scratch\nstages:\n  app:\n    from: scratch\n",
            "kiln.yaml:1:1:",
            "top-level \"from\" cannot be used together with stages:",
        ),
        (
            "stages:\n  build:\n    from: scratch\n  app:\n    from: scratch\n    steps:\n      - copy: /x\n        from: bulid\n        to: /x\n",
            "kiln.yaml:8:15:",
            "unknown build context or stage \"bulid\" (did you mean \"build\"?)",
        ),
        (
            "from: scratch\nsteps:\n  - run: make\n    secrets: [{ id: t, source: ./t, env: T }]\n",
            "kiln.yaml:4:37:",
            "a secret takes \"source\" or \"env\", not both",
        ),
        (
            "from: scratch\nrun:\n  ports: [\"8080:80/icmp\"]\n",
            "kiln.yaml:3:11:",
            "invalid port mapping \"8080:80/icmp\": unknown protocol \"icmp\"",
        ),
        (
            "from: scratch\nrun:\n  ports:\n    - { target: 80, published: 8080 }\n    - 8080:81\n",
            "kiln.yaml:5:7:",
            "host port 8080/tcp is published twice",
        ),
        (
            "from: scratch\nrun:\n  network_rate_out: 8mb\n",
            "kiln.yaml:3:21:",
            "invalid rate \"8mb\": unknown unit \"mb\"",
        ),
    ];
    for (spec, location, detail) in cases {
        let err = build_error(spec);
        assert!(
            err.starts_with(&format!("error: {location}")),
            "for\n{spec}\ngot: {err}"
        );
        assert!(
            err.contains(detail),
            "for\n{spec}\nexpected {detail:?} in: {err}"
        );
    }
}

#[test]
fn unknown_build_arg_is_an_error() {
    let env = Env::unprivileged();
    env.write("kiln.yaml", "from: scratch\nargs: { A: x }\n");
    let out = env.kiln(&[
        "build",
        env.dir.path().to_str().unwrap(),
        "--arg",
        "B=1",
        "-t",
        "x",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown build arg \"B\""),
        "{}",
        text(&out)
    );
}

#[test]
fn missing_spec_file_is_a_clear_error() {
    let env = Env::unprivileged();
    let out = env.kiln(&["build", env.dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("kiln.yaml"),
        "{}",
        text(&out)
    );
}
