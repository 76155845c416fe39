//! How soon the terminal UI shows its first frame for a large pair of checkpoints, against
//! how long the full comparison (which runs behind it, off the UI thread) takes.
//!
//! `cargo bench --bench tui_startup` (size with `BNAUDIT_BENCH_GIB`, default 2): writes A and
//! B to a temporary directory, each holding one large F32 tensor that differs in a few bytes
//! plus 100 BatchNorm layers whose running statistics differ, then times
//! 1. open both + their `ls` reports + the first frame drawn (what the user waits for), and
//! 2. the diff the UI runs in the background.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Instant;

use bnaudit::audit::{DiffOptions, diff};
use bnaudit::checkpoint::{Checkpoint, ReadMode};
use bnaudit::tui::{App, Session, Theme, view};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::layout::Rect;

const LAYERS: usize = 100;
const CHANNELS: usize = 256;

/// Writes a safetensors file: one `big` F32 tensor of `big_bytes` (bytes `poke` set to 1, the
/// rest zero) and `LAYERS` BatchNorm layers whose running statistics are shifted by `shift`.
fn write(path: &Path, big_bytes: u64, poke: Option<u64>, shift: f32) {
    let mut header = serde_json::Map::new();
    let mut offset = 0u64;
    let mut add = |name: String, dtype: &str, shape: Vec<u64>, bytes: u64| {
        header.insert(
            name,
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    };
    add(
        "backbone.big.weight".to_owned(),
        "F32",
        vec![big_bytes / 4],
        big_bytes,
    );
    let c = CHANNELS as u64;
    for l in 0..LAYERS {
        for role in ["weight", "bias", "running_mean", "running_var"] {
            add(
                format!("backbone.block{l}.bn.{role}"),
                "F32",
                vec![c],
                c * 4,
            );
        }
        add(
            format!("backbone.block{l}.bn.num_batches_tracked"),
            "I64",
            vec![],
            8,
        );
    }
    let mut text = serde_json::to_string(&header).expect("header");
    while !text.len().is_multiple_of(8) {
        text.push(' ');
    }
    let file = File::create(path).expect("create");
    let mut out = BufWriter::new(file);
    out.write_all(&(text.len() as u64).to_le_bytes()).unwrap();
    out.write_all(text.as_bytes()).unwrap();
    let data_start = 8 + text.len() as u64;
    // The big tensor is a hole (zeros) except the poked byte: fast to write, real to read.
    let mut file = out.into_inner().expect("flush");
    if let Some(at) = poke {
        file.seek(SeekFrom::Start(data_start + at)).unwrap();
        file.write_all(&[1]).unwrap();
    }
    file.seek(SeekFrom::Start(data_start + big_bytes)).unwrap();
    let mut out = BufWriter::new(file);
    for l in 0..LAYERS {
        let f = |v: f32| (0..CHANNELS).flat_map(move |_| v.to_le_bytes());
        let bytes: Vec<u8> = f(1.0)
            .chain(f(0.0))
            .chain(f(0.1 * l as f32 + shift))
            .chain(f(1.0 + shift))
            .collect();
        out.write_all(&bytes).unwrap();
        out.write_all(&(100 + (shift * 100.0) as i64).to_le_bytes())
            .unwrap();
    }
    out.flush().unwrap();
}

fn main() {
    let gib: u64 = std::env::var("BNAUDIT_BENCH_GIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let dir = tempfile::tempdir().expect("temp dir");
    let (a, b) = (
        dir.path().join("a.safetensors"),
        dir.path().join("b.safetensors"),
    );
    let big = gib << 30;
    write(&a, big, None, 0.0);
    write(&b, big, Some(big / 2), 0.25);
    // Drop the page cache's copy where we can, so reads come from disk as on first use.
    let _ = std::process::Command::new("sh")
        .args(["-c", "sync; echo 1 > /proc/sys/vm/drop_caches"])
        .status();

    let start = Instant::now();
    let open = |p: &Path| Checkpoint::open(p, ReadMode::Mmap).expect("open");
    let session = Session::new(open(&a), Some(open(&b)), None);
    let reports = session.reports().expect("ls");
    let app = App::new(reports, Theme { color: true }, Rect::new(0, 0, 120, 40));
    let mut terminal = Terminal::new(TestBackend::new(120, 40)).expect("terminal");
    terminal.draw(|f| view::render(f, &app)).expect("draw");
    let first_frame = start.elapsed();

    let start = Instant::now();
    let b_side = session.b.as_ref().expect("pair");
    let report = diff(
        &session.a.checkpoint,
        &b_side.checkpoint,
        &DiffOptions::default(),
        None,
    )
    .expect("diff");
    let compare = start.elapsed();
    let changed = report
        .tensors
        .iter()
        .filter(|t| t.name == "backbone.big.weight")
        .map(|t| t.changed_elements)
        .next()
        .flatten();

    println!(
        "pair of {gib} GiB checkpoints ({LAYERS} BatchNorm layers of {CHANNELS} channels each):"
    );
    println!(
        "  first frame (open + ls of both + draw): {:.1} ms",
        first_frame.as_secs_f64() * 1e3
    );
    println!(
        "  full comparison in the background:      {:.1} ms ({:.2} GiB/s over both files; big tensor: {:?} elements differ)",
        compare.as_secs_f64() * 1e3,
        (2 * gib) as f64 / compare.as_secs_f64(),
        changed
    );
}
