//! Exit codes, the contract in DESIGN.md: 0 every input worked, 1 some
//! inputs failed (each reported), 2 bad usage or a model that cannot be
//! loaded, 130 interrupted (Ctrl-C) after flushing what was done.

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok,
    SomeFailed,
    Usage,
    Interrupted,
}

impl Exit {
    /// `Ok` when nothing failed, `SomeFailed` otherwise.
    pub fn from_failures(failed: usize) -> Self {
        if failed == 0 {
            Exit::Ok
        } else {
            Exit::SomeFailed
        }
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(match e {
            Exit::Ok => 0,
            Exit::SomeFailed => 1,
            Exit::Usage => 2,
            Exit::Interrupted => 130,
        })
    }
}
