import subprocess
import sys

from quota.cli.main import main


def test_help_lists_commands(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "usage: quota" in out and "bench" in out


def test_console_entry_runs_as_module():
    proc = subprocess.run([sys.executable, "-m", "quota.cli.main", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("quota ")


def test_python_m_quota_runs_the_command_line():
    out = subprocess.run([sys.executable, "-m", "quota", "--help"], capture_output=True, text=True, check=True)
    assert "solve" in out.stdout and "eval" in out.stdout


def test_eval_suite_loads_the_weights_folder_it_is_given(tmp_path, capsys):
    missing = tmp_path / "no_weights_here"
    rc = main(["eval", "--suite", str(tmp_path / "suite"), "--weights", str(missing), "--plans", "random",
               "--budgets", "64", "--precisions", "bf16", "--limit", "1", "--device", "cpu"])
    assert rc == 2
    assert str(missing) in capsys.readouterr().err
    assert not (tmp_path / "suite").exists() or not any((tmp_path / "suite").iterdir())  # nothing half-written
