//! The supervisor of a command tool's program: a small process of its own (`jobgraph
//! supervise`) between the worker and the program, for two things the worker cannot do itself.
//!
//! - **Nothing outlives the worker.** The supervisor's stdin is one end of a socket whose other
//!   end only the worker holds. When the worker lets go of it (a timeout, a cancel, a stop) or
//!   dies in any way, even by `kill -9`, the supervisor reads end-of-file and kills the
//!   program's process group, with everything the program started. The program is also told
//!   to die with the supervisor (`PR_SET_PDEATHSIG`), should the supervisor itself be killed.
//! - **The program's own usage.** A process forked from the worker counts the worker's memory
//!   as its own peak (Linux keeps the peak resident size across `exec`); a program forked from
//!   this small process counts only its own. The supervisor reaps it with `wait4` and sends its
//!   exit status and usage (its descendants that it waited for included) back on the socket.
//!
//! The program runs in the supervisor's working directory, with its stdout and stderr, and its
//! stdin empty.

use std::ffi::OsString;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::fd::AsFd as _;
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::process::{Command, ExitStatus, Stdio};

use serde::{Deserialize, Serialize};

use super::Usage;

/// What the supervisor sends back: one line of JSON.
#[derive(Debug, Serialize, Deserialize)]
pub enum Report {
    /// The program ended; its raw wait status and what it used.
    Ended {
        status: i32,
        cpu_user_seconds: f64,
        cpu_system_seconds: f64,
        peak_memory_bytes: u64,
    },
    /// The program could not be started.
    NotStarted(String),
}

impl Report {
    /// Reads the report from the worker's end of the socket, once the supervisor has ended.
    pub fn read(lifeline: &UnixStream) -> std::io::Result<Report> {
        let mut line = String::new();
        BufReader::new(lifeline).read_line(&mut line)?;
        serde_json::from_str(&line)
            .map_err(|err| std::io::Error::other(format!("the supervisor sent no report ({err})")))
    }

    /// The exit status and usage of an ended program, or why it did not start.
    pub fn outcome(self) -> Result<(ExitStatus, Usage), String> {
        match self {
            Report::Ended {
                status,
                cpu_user_seconds,
                cpu_system_seconds,
                peak_memory_bytes,
            } => Ok((
                ExitStatus::from_raw(status),
                Usage {
                    cpu_user_seconds,
                    cpu_system_seconds,
                    peak_memory_bytes,
                },
            )),
            Report::NotStarted(why) => Err(why),
        }
    }
}

/// Runs `command` (a program and its arguments) under supervision; what `jobgraph supervise`
/// does. Returns the supervisor's exit code.
pub fn main(command: &[OsString]) -> i32 {
    let Some((program, args)) = command.split_first() else {
        eprintln!("jobgraph supervise: no program given");
        return 2;
    };
    // Read and written as a file: the worker gives a socket, but any stream will do.
    let lifeline = match std::io::stdin().as_fd().try_clone_to_owned() {
        Ok(fd) => std::fs::File::from(fd),
        Err(err) => {
            eprintln!("jobgraph supervise: stdin is not the worker's socket: {err}");
            return 2;
        }
    };
    let report = supervise(program, args, &lifeline);
    let mut line = serde_json::to_string(&report).expect("a report serialises");
    line.push('\n');
    // The worker may be gone; then no one is told.
    let _ = (&lifeline).write_all(line.as_bytes());
    0
}

fn supervise(program: &OsString, args: &[OsString], lifeline: &std::fs::File) -> Report {
    let supervisor = std::process::id() as i32;
    let mut command = Command::new(program);
    command.args(args).stdin(Stdio::null()).process_group(0);
    die_with_parent(&mut command, supervisor);
    let child = match command.spawn() {
        Ok(child) => child,
        Err(err) => {
            return Report::NotStarted(format!(
                "cannot start `{}`: {err}",
                program.to_string_lossy()
            ));
        }
    };
    let group = nix::unistd::Pid::from_raw(child.id() as i32);
    let kill_group = move || {
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
    };
    // Whatever the worker sends, and the end of the stream when it lets go or dies, means stop.
    if let Ok(watched) = lifeline.try_clone() {
        std::thread::spawn(move || {
            loop {
                match (&watched).read(&mut [0u8; 1]) {
                    Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                    _ => break,
                }
            }
            kill_group();
        });
    }
    let reaped = wait_with_usage(child.id() as i32);
    // What the program left running in its group ends with it.
    kill_group();
    match reaped {
        Ok((status, usage)) => Report::Ended {
            status,
            cpu_user_seconds: usage.cpu_user_seconds,
            cpu_system_seconds: usage.cpu_system_seconds,
            peak_memory_bytes: usage.peak_memory_bytes,
        },
        Err(err) => Report::NotStarted(format!("waiting for the program: {err}")),
    }
}

/// Has the program killed when the supervisor dies. The supervisor forks from its main thread,
/// which lives as long as it does (the signal follows the forking thread, not the process).
#[expect(
    unsafe_code,
    reason = "prctl between fork and exec; no safe API sets a child's parent-death signal"
)]
fn die_with_parent(command: &mut Command, supervisor: i32) {
    // SAFETY: the hook runs in the forked child before exec and calls only `prctl` and
    // `getppid`, which are async-signal-safe and touch no memory of the parent.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The supervisor died before the signal was set: it would never come.
            if libc::getppid() != supervisor {
                return Err(std::io::Error::other("the supervisor is gone"));
            }
            Ok(())
        });
    }
}

/// Waits for the child `pid` to end and reaps it, with what it used.
///
/// `wait4` is the one call that gives a child's exit status and its resource usage together
/// (`getrusage` only sums all children); no safe wrapper of it returns the usage.
#[expect(unsafe_code, reason = "wait4 with its rusage has no safe wrapper")]
fn wait_with_usage(pid: i32) -> std::io::Result<(i32, Usage)> {
    let mut status: libc::c_int = 0;
    // SAFETY: `rusage` holds plain integers, for which all zeros is a valid value.
    let mut rusage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: both pointers are to live locals of the right types for the whole call.
        let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut rusage) };
        if reaped == pid {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let usage = Usage {
        cpu_user_seconds: seconds(rusage.ru_utime),
        cpu_system_seconds: seconds(rusage.ru_stime),
        // Kibibytes on Linux: the larger of the program's own peak and that of the largest of
        // its descendants that it waited for.
        peak_memory_bytes: (rusage.ru_maxrss.max(0) as u64) * 1024,
    };
    Ok((status, usage))
}
