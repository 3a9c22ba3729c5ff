"""SSE parsing, prompt corpus and calibration, Prometheus power parsing and energy."""

from __future__ import annotations

import pytest

from npucenter.bench.client import Target, build_body
from npucenter.bench.corpus import TokenCalibration, corpus_words, make_prompt
from npucenter.bench.power import PowerReading, _energy, make_power_source, parse_prometheus
from npucenter.errors import InvalidConfigError, UnknownPluginError
from npucenter.wire.sse import SSEParser


def test_sse_parser_handles_events_split_across_reads():
    p = SSEParser()
    out = list(p.feed(b'data: {"a"'))
    out += list(p.feed(b": 1}\n\nda"))
    out += list(p.feed(b"ta: [DONE]\n\n"))
    assert out == [b'{"a": 1}', b"[DONE]"]


def test_sse_parser_handles_crlf_and_comments_and_many_per_read():
    p = SSEParser()
    out = list(p.feed(b": ping\r\n\r\ndata: 1\r\n\r\ndata: 2\r\n\r\nevent: x\r\ndata: 3\r\n\r\n"))
    assert out == [b"1", b"2", b"3"]


def test_sse_parser_flush_returns_unterminated_event():
    p = SSEParser()
    assert list(p.feed(b"data: 7")) == []
    assert list(p.flush()) == [b"7"]


def test_corpus_is_shipped_and_unique():
    words = corpus_words()
    assert len(words) >= 100
    assert len(set(words)) == len(words)
    assert all(w.isalpha() and w.islower() and len(w) <= 4 for w in words)


def test_make_prompt_exact_word_count_and_deterministic():
    assert len(make_prompt(123, seed=4).split()) == 123
    assert make_prompt(50, seed=4) == make_prompt(50, seed=4)
    assert make_prompt(50, seed=4) != make_prompt(50, seed=5)


def test_calibration_fit_inverts_a_linear_server_count():
    # a server counting 1.25 tokens per word plus a 9-token template
    cal = TokenCalibration.fit((32, 160), (49, 209))
    for target in (64, 500, 2048):
        words = cal.words_for(target)
        assert abs(1.25 * words + 9 - target) <= 1.25


def test_calibration_rejects_a_count_that_does_not_grow():
    with pytest.raises(InvalidConfigError):
        TokenCalibration.fit((32, 160), (40, 40))


def test_build_body_asks_for_usage_and_exact_length():
    t = Target(base_url="http://127.0.0.1:1/v1", model="m")
    body = build_body(t, "hello", 17)
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 17 and body["messages"][0]["content"] == "hello"
    assert t.completions_url == "http://127.0.0.1:1/v1/chat/completions"
    t2 = Target(base_url="http://h:1", model="m", api="completions", ignore_eos=False)
    assert "ignore_eos" not in build_body(t2, "x", 3)
    assert t2.completions_url == "http://h:1/v1/completions"


def test_target_rejects_non_http_endpoint():
    with pytest.raises(InvalidConfigError):
        Target(base_url="localhost:8000", model="m")


def test_parse_prometheus_sums_series_and_ignores_comments():
    text = (
        "# HELP npucenter_power_watts p\n# TYPE npucenter_power_watts gauge\n"
        'npucenter_power_watts{device="a"} 100.5\n'
        'npucenter_power_watts{device="b",x="}"} 50 1700000000\n'
        "other_total 3\n"
    )
    samples = parse_prometheus(text)
    assert samples["npucenter_power_watts"] == pytest.approx(150.5)
    assert samples["other_total"] == 3


def test_energy_prefers_counter_then_integrates_power():
    by_counter = _energy(
        "prometheus",
        [(0.0, PowerReading(power_w=1, energy_j=10)), (2.0, PowerReading(power_w=1, energy_j=510))],
    )
    assert by_counter is not None and by_counter.method == "counter"
    assert by_counter.energy_j == pytest.approx(500) and by_counter.mean_power_w == pytest.approx(
        250
    )
    integrated = _energy(
        "prometheus",
        [
            (0.0, PowerReading(power_w=100)),
            (1.0, PowerReading(power_w=300)),
            (2.0, PowerReading(power_w=300)),
        ],
    )
    assert integrated is not None and integrated.energy_j == pytest.approx(200 + 300)


def test_power_source_specs():
    assert make_power_source("none", "http://h").name == "none"
    assert make_power_source("constant=350", "http://h").name == "constant"
    prom = make_power_source("auto", "http://h:9/")
    assert prom.url == "http://h:9/metrics"
    with pytest.raises(UnknownPluginError):
        make_power_source("nvml-magic", "http://h")
    with pytest.raises(InvalidConfigError):
        make_power_source("constant=abc", "http://h")
