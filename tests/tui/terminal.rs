//! The real binary in a real terminal (tmux): open the demo pair, find the drifted layer,
//! quit, and check that the terminal came back (main screen, cooked mode, no mouse capture).

use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::writer::SafetensorsWriter;

/// A private tmux server, killed when dropped (also when the test panics).
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(width: u16, height: u16) -> Tmux {
        let found = Command::new("tmux").arg("-V").output();
        assert!(
            found.as_ref().is_ok_and(|o| o.status.success()),
            "tmux is required for this test and was not found: install it \
             (apt-get install tmux; .ci/run does)"
        );
        // One server per instance: tests run in parallel within this process.
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let tmux = Tmux {
            socket: format!(
                "bnaudit-test-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ),
        };
        let out = tmux.run(&[
            "new-session",
            "-d",
            "-s",
            "ui",
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
            "sh",
        ]);
        assert!(out.status.success(), "tmux new-session: {out:?}");
        tmux
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .env_remove("TMUX")
            .output()
            .expect("tmux runs")
    }

    /// Types `keys` (tmux key names, e.g. `Enter`, or literal text).
    fn send(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "ui"];
        args.extend(keys);
        assert!(self.run(&args).status.success());
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "ui"]).stdout).into_owned()
    }

    fn display(&self, format: &str) -> String {
        let out = self.run(&["display-message", "-p", "-t", "ui", format]);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Waits until the screen shows `text`; fails with the screen after 20 s.
    fn wait_for(&self, text: &str) -> String {
        let start = Instant::now();
        loop {
            let screen = self.screen();
            if screen.contains(text) {
                return screen;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "waited 20 s for {text:?}; the screen shows:\n{screen}"
            );
            sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

/// `ui` (a shell command run in the repository), then the exit code and the terminal
/// modes, then a marker. The quotes keep the markers out of the echoed command line.
fn then_report_the_terminal(ui: &str) -> String {
    format!(
        "cd '{}' && {ui}; \
         echo \"EX\"\"IT=$?\"; stty -a | tr ' ;' '\\n\\n' | grep -x -e icanon -e -icanon -e echo \
         -e -echo | tr '\\n' ' '; echo; echo \"DO\"\"NE\"",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// Waits for the UI to end, then checks the exit code and that the terminal came back.
fn assert_restored(tmux: &Tmux, exit: u8) {
    let after = tmux.wait_for("DONE");
    assert!(after.contains(&format!("EXIT={exit}")), "{after}");
    assert!(
        after.contains("\nicanon echo"),
        "canonical mode and echo are back: {after}"
    );
    assert!(!after.contains("Verdicts"), "the UI is gone: {after}");
    assert_eq!(tmux.display("#{alternate_on}"), "0", "main screen is back");
    assert_eq!(
        tmux.display("#{mouse_any_flag}"),
        "0",
        "mouse capture is off"
    );
}

/// The real binary run by a shell that first writes its pid to a file (`exec` keeps the
/// pid, and the UI's exit code is the shell's), so that tests can signal it.
struct UiProcess {
    pid_file: std::path::PathBuf,
}

impl UiProcess {
    fn new(dir: &Path) -> UiProcess {
        UiProcess {
            pid_file: dir.join("pid"),
        }
    }

    /// The shell command running bnaudit with `args` (quoted for `sh`, no single quotes).
    fn command(&self, args: &str) -> String {
        format!(
            "sh -c 'echo $$ > \"{}\"; exec \"{}\" {args}'",
            self.pid_file.display(),
            env!("CARGO_BIN_EXE_bnaudit")
        )
    }

    /// `kill -SIGNAL` of the process; `0` asks whether it is alive.
    fn signal(&self, signal: &str) -> bool {
        let pid = std::fs::read_to_string(&self.pid_file).expect("pid written");
        Command::new("kill")
            .args([&format!("-{signal}"), pid.trim()])
            .output()
            .expect("kill runs")
            .status
            .success()
    }
}

#[test]
fn real_binary_in_tmux_finds_the_drift_and_restores_the_terminal() {
    let tmux = Tmux::start(100, 30);
    let bin = env!("CARGO_BIN_EXE_bnaudit");
    let command = then_report_the_terminal(&format!(
        "'{bin}' assets/demo/pretrained.safetensors assets/demo/finetuned.safetensors"
    ));
    tmux.send(&[&command, "Enter"]);

    // Overview: the verdict names the drifted sub-model.
    let overview = tmux.wait_for("Verdicts by sub-model");
    assert!(overview.contains("✗ backbone"), "{overview}");
    assert_eq!(
        tmux.display("#{alternate_on}"),
        "1",
        "UI on the alternate screen"
    );

    // Layers, searched for layer2; its biggest drift is a frozen one.
    tmux.send(&["2"]);
    tmux.wait_for("Layers 21/21");
    tmux.send(&["/", "layer2", "Enter"]);
    let layers = tmux.wait_for("/layer2 ");
    let first_row = layers
        .lines()
        .find(|l| l.contains("backbone.layer2"))
        .expect("a layer2 row");
    assert!(first_row.contains("✗ frozen drift"), "{layers}");

    // Its detail: the verdict and the plots.
    tmux.send(&["Enter"]);
    let detail = tmux.wait_for("running_mean");
    assert!(detail.contains("frozen drift:"), "{detail}");
    assert!(detail.contains("train-mode forwards"), "{detail}");

    // Quit: the shell runs the next commands in a restored terminal.
    tmux.send(&["q"]);
    assert_restored(&tmux, 0);
}

/// `kill -TERM|-INT|-HUP` of the UI restores the terminal and exits 128 + the signal.
#[test]
fn signals_end_the_ui_with_the_terminal_restored() {
    for (signal, number) in [("TERM", 15), ("INT", 2), ("HUP", 1)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let ui = UiProcess::new(dir.path());
        let tmux = Tmux::start(100, 30);
        tmux.send(&[&then_report_the_terminal(&ui.command("demo")), "Enter"]);
        tmux.wait_for("Verdicts by sub-model");
        assert_eq!(tmux.display("#{mouse_any_flag}"), "1", "mouse captured");
        assert!(ui.signal(signal));
        assert_restored(&tmux, 128 + number);
    }
}

/// The terminal going away (tmux killed: SIGHUP, and every write fails) ends the UI: the
/// restore that fails must not keep the process alive, spinning on a dead terminal.
#[test]
fn hang_up_ends_the_ui() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ui = UiProcess::new(dir.path());
    let tmux = Tmux::start(100, 30);
    tmux.send(&[&ui.command("demo"), "Enter"]);
    tmux.wait_for("Verdicts by sub-model");
    drop(tmux);
    let start = Instant::now();
    while ui.signal("0") && start.elapsed() < Duration::from_secs(10) {
        sleep(Duration::from_millis(50));
    }
    let still = ui.signal("0");
    if still {
        // Do not leave it spinning.
        ui.signal("KILL");
    }
    assert!(!still, "the UI outlived its terminal by 10 s");
}

/// A signal while the UI writes a restore: the temporary file is removed and the terminal
/// restored (in that order, by one handler), then the exit is 128 + the signal.
#[test]
fn signal_during_a_restore_written_from_the_ui() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A drifted layer beside a tensor large enough that copying it takes a while.
    let big = vec![0u8; 96 << 20];
    for (name, mean, count) in [("a.safetensors", 0.0, 0), ("b.safetensors", 0.5, 3)] {
        SafetensorsWriter::default()
            .raw("big.weight", "U8", &[big.len()], &big)
            .f32_filled("big.bn.running_mean", 4, mean)
            .f32_filled("big.bn.running_var", 4, 1.0)
            .i64_scalar("big.bn.num_batches_tracked", count)
            .write(&dir.path().join(name));
    }
    let output = dir.path().join("b.restored.safetensors");
    let temp = || {
        std::fs::read_dir(dir.path())
            .expect("read_dir")
            .map(|e| e.expect("entry").path())
            .find(|p| p.to_string_lossy().ends_with(".bnaudit-tmp"))
    };
    for _ in 0..5 {
        let ui = UiProcess::new(dir.path());
        let tmux = Tmux::start(120, 40);
        let view = format!(
            "--no-mmap \"{dir}/a.safetensors\" \"{dir}/b.safetensors\"",
            dir = dir.path().display()
        );
        tmux.send(&[&then_report_the_terminal(&ui.command(&view)), "Enter"]);
        tmux.wait_for("Verdicts by sub-model");
        tmux.send(&["2"]);
        tmux.wait_for("Layers 1/1");
        tmux.send(&["w"]);
        tmux.wait_for("b.restored.safetensors_");
        tmux.send(&["Enter"]);
        tmux.wait_for("Restore plan");
        tmux.send(&["Enter"]);
        let start = Instant::now();
        let found = loop {
            let found = temp();
            if found.is_some() || output.exists() || start.elapsed() > Duration::from_secs(20) {
                break found;
            }
        };
        let Some(found) = found else {
            // The write finished before the poll saw it: try again.
            tmux.send(&["Escape", "q"]);
            tmux.wait_for("DONE");
            let _ = std::fs::remove_file(&output);
            continue;
        };
        assert!(ui.signal("TERM"));
        tmux.wait_for("DONE");
        if output.exists() {
            // Renamed into place just before the signal: try again.
            std::fs::remove_file(&output).expect("remove");
            continue;
        }
        assert_restored(&tmux, 128 + 15);
        assert!(!found.exists(), "the temporary file is removed");
        assert!(!output.exists(), "nothing is renamed into place");
        return;
    }
    panic!("the restore always finished before the signal");
}

/// no-color.org: an empty `NO_COLOR` leaves colour on, in the UI as in the text reports;
/// a non-empty one turns it off.
#[test]
fn empty_no_color_keeps_the_ui_coloured() {
    let bin = env!("CARGO_BIN_EXE_bnaudit");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (value, coloured) in [("", true), ("1", false)] {
        let tmux = Tmux::start(100, 30);
        tmux.send(&[
            &format!("cd '{}' && NO_COLOR={value} '{bin}' demo", root.display()),
            "Enter",
        ]);
        tmux.wait_for("Verdicts by sub-model");
        let out = tmux.run(&["capture-pane", "-p", "-e", "-t", "ui"]);
        let screen = String::from_utf8_lossy(&out.stdout);
        // A foreground colour (SGR 31-37, 91-97 or 38;…) anywhere on the screen.
        let has_colour = screen.split('\u{1b}').any(|seq| {
            let Some(params) = seq.strip_prefix('[').and_then(|s| s.split('m').next()) else {
                return false;
            };
            params
                .split(';')
                .any(|p| matches!(p.parse::<u8>(), Ok(30..=38 | 90..=97)))
        });
        assert_eq!(has_colour, coloured, "NO_COLOR={value:?}:\n{screen}");
        tmux.send(&["q"]);
    }
}
