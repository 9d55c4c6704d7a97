"""The Prometheus endpoint of a running daemon: the promised series, no patient data."""

from __future__ import annotations

import os
import re
import signal
import time
import urllib.request
from pathlib import Path

from tests.conftest import SAMPLES, free_port, sample_table, write_config
from tests.test_crash import start


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode("utf-8"))


def test_metrics_endpoint_counts_by_type_and_outcome_without_patient_data(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, extra=f'[metrics]\naddress = "127.0.0.1:{port}"\nrefresh_seconds = 0.2\n')
    daemon = start(config, tmp_path / "daemon.log")
    try:
        names = [r.file for r in sample_table()]
        inbox = tmp_path / "var" / "inbox"
        for name in names:  # the hub writes atomically: the daemon runs with settle 0 here
            (inbox / f".{name}.tmp").write_bytes((SAMPLES / name).read_bytes())
            os.replace(inbox / f".{name}.tmp", inbox / name)
        deadline = time.time() + 60
        text = ""
        while time.time() < deadline:
            text = _scrape(port)
            done = sum(
                float(v) for v in re.findall(r"^pfhjem_messages_processed_total\{.*\} (\S+)$", text, re.M)
            )
            if done >= len(names):
                break
            time.sleep(0.3)
        time.sleep(1)  # a refresh of the gauges from the store
        text = _scrape(port)
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=60) == 0
    assert 'pfhjem_messages_received_total{source="spool"} ' + f"{len(names)}.0" in text
    assert 'pfhjem_messages_processed_total{msg_type="DIALOG_HELSEFAGLIG",outcome="done"}' in text
    assert 'pfhjem_messages_processed_total{msg_type="unreadable",outcome="held"}' in text
    assert 'pfhjem_delivery_attempts_total{kind="apprec",transport="hub"}' in text
    assert "pfhjem_processing_seconds_bucket" in text
    assert re.search(r'^pfhjem_messages\{state="done"\} [1-9]', text, re.M)
    assert "pfhjem_oldest_unfinished_seconds" in text and "pfhjem_gp_copies_without_apprec 0.0" in text
    labels = " ".join(re.findall(r"\{([^}]*)\}", text))
    assert not re.search(r"\d{7,}", labels), "ids or HER-ids in labels"
    assert not any(word in text for word in ("Prøvestad", "Solveig", "14835841481"))
