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
