//! An image's `/etc/passwd` and `/etc/group`, read to resolve the user a
//! container runs as (`USER nobody`, `--user name:group`).

use std::fs;

use super::{Def, PARSER_ITERS, split2, text};
use crate::Target;

const USERS: [&str; 6] = ["root", "nobody", "1000", "1000:50", "daemon:staff", "x:1"];

pub(super) fn def() -> Def {
    Def {
        target: Target {
            name: "user",
            default_iters: PARSER_ITERS / 4,
            dictionary: &[
                ":",
                "\n",
                "::",
                ":x:",
                "root",
                "nobody",
                "4294967295",
                "-1",
                "#",
                ",",
            ],
            max_len: 4 << 10,
        },
        check,
    }
}

fn check(data: &[u8]) {
    let (passwd, group) = split2(data);
    let tmp = tempfile::tempdir().expect("temp dir");
    let etc = tmp.path().join("etc");
    fs::create_dir(&etc).expect("etc");
    fs::write(etc.join("passwd"), text(passwd).as_bytes()).expect("passwd");
    fs::write(etc.join("group"), text(group).as_bytes()).expect("group");
    for user in USERS {
        let _ = berth_spec::user::resolve(user, tmp.path());
    }
}
