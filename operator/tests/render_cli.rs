//! The README's "Review what the operator creates", run as written with this
//! build's binary: `render` prints the children of the example, the same the
//! library renders (which `e2e/tests/render.rs` holds to what the operator
//! creates on the API server).

use std::{path::Path, process::Command};

use lotus_follower_operator::render::{RenderOptions, render};

const README: &str = include_str!("../../README.md");

#[test]
fn the_readmes_render_command_prints_the_examples_children() -> anyhow::Result<()> {
    let heading = "### Review what the operator creates\n";
    let start = README
        .find(heading)
        .ok_or_else(|| anyhow::anyhow!("the README lost its section {heading:?}"))?;
    let body = &README[start + heading.len()..];
    let block = body
        .split("```sh\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .ok_or_else(|| anyhow::anyhow!("no sh block under {heading:?}"))?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut ran = 0;
    for command in block.lines().filter(|line| !line.trim().is_empty()) {
        let mut words = command.split_whitespace();
        anyhow::ensure!(
            words.next() == Some("lotus-follower-operator"),
            "not a render command: {command}"
        );
        let args: Vec<&str> = words.collect();
        let output = Command::new(env!("CARGO_BIN_EXE_lotus-follower-operator"))
            .args(&args)
            .current_dir(&root)
            .output()?;
        anyhow::ensure!(
            output.status.success(),
            "{command}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let printed = String::from_utf8(output.stdout)?;
        let file = args
            .iter()
            .skip_while(|arg| **arg != "-f")
            .nth(1)
            .ok_or_else(|| anyhow::anyhow!("{command} names no file"))?;
        let expected = render(
            &std::fs::read_to_string(root.join(file))?,
            &RenderOptions::default(),
        )?;
        assert_eq!(printed, expected, "{command}");
        assert!(printed.contains("kind: Deployment"), "{printed}");
        println!("{command}: {} lines", printed.lines().count());
        ran += 1;
    }
    assert!(ran > 0, "no command under {heading:?}");
    Ok(())
}
