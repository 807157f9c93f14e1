//! How a command ends, as its process exit code. One meaning per number,
//! for every command; only `main` turns an `Exit` into a number.

/// The outcome of a command, in the terms of its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: done (`plan`: nothing refused; `fleet wait`: converged).
    Ok,
    /// 1: the input is refused: an invalid, untrusted or earlier rejected
    /// commit (`sync`, `validate`, `plan`), or a fleet that did not take
    /// the commit (`fleet wait`).
    Refused,
    /// 2: usage or setup: a bad flag, a secret file that cannot be read.
    Usage,
    /// 3: what the command reads from cannot be reached or read: the Git
    /// remote (`sync`, `run`, `plan`), Redis (`fleet`).
    Remote,
    /// 4: the gateway: not answering, not taking the secret, or not loading
    /// what was committed (rolled back).
    Gateway,
    /// 5: this machine: the local disk, the state file, the runtime.
    Local,
}

impl Exit {
    pub fn code(self) -> i32 {
        match self {
            Exit::Ok => 0,
            Exit::Refused => 1,
            Exit::Usage => 2,
            Exit::Remote => 3,
            Exit::Gateway => 4,
            Exit::Local => 5,
        }
    }

    /// `Refused` when `refused`, else `Ok`.
    pub fn refused_if(refused: bool) -> Exit {
        if refused { Exit::Refused } else { Exit::Ok }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_codes_documented_in_main_and_the_readme() {
        let all = [
            Exit::Ok,
            Exit::Refused,
            Exit::Usage,
            Exit::Remote,
            Exit::Gateway,
            Exit::Local,
        ];
        let codes: Vec<i32> = all.iter().map(|e| e.code()).collect();
        assert_eq!(codes, [0, 1, 2, 3, 4, 5]);
    }
}
