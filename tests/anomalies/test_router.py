"""GET /anomalies and /anomalies/plot through the HTTP API, against real databases and
the real analysis processes."""

from __future__ import annotations

import io
from typing import Any

import pytest
from PIL import Image

from app.anomalies.schemas import AnomalyResult
from tests.anomalies.conftest import RANGE, SHIFT_AT, SPIKE_AT, SPIKY, at, spiky_series
from tests.conftest import IngestEnvironment, running_app


async def anomalies(env: IngestEnvironment, **params: Any) -> Any:
    return await env.client.get("/anomalies", params={**RANGE, **params})


async def test_a_spike_and_a_level_shift_are_found_and_explained(
    sensors: IngestEnvironment,
) -> None:
    response = await anomalies(sensors, sensor_name="spiky")
    assert response.status_code == 200, response.text
    result = AnomalyResult.model_validate(response.json())
    series = spiky_series()
    assert result.sensor_uuid.hex == SPIKY.replace("-", "")
    assert [(c.kind, c.timestamp) for c in result.change_points] == [
        ("level_shift", at(series, SHIFT_AT))
    ]
    assert [(w.kind, w.start) for w in result.windows] == [("spike", at(series, SPIKE_AT))]
    assert len(result.segments) == 2
    assert result.segments[0].n == SHIFT_AT
    assert result.anomaly_count == 2
    assert result.anomalies[0].value > result.anomalies[0].upper
    assert result.summary.points == len(series.values)
    assert result.parameters is not None
    assert result.parameters.penalty is not None
    assert result.parameters.penalty_rule.startswith("auto: BIC")
    assert len(result.parameters.hash) == 16
    assert any("penalty" in line for line in result.explanation)
    assert result.plot_url.startswith("/anomalies/plot?sensor_name=spiky")


async def test_a_clean_sensor_has_nothing_to_report(sensors: IngestEnvironment) -> None:
    result = (await anomalies(sensors, sensor_name="calm")).json()
    assert (result["window_count"], result["change_points"]) == (0, [])
    assert "No anomalous readings." in result["explanation"]


async def test_timestamps_render_in_tz(sensors: IngestEnvironment) -> None:
    result = (await anomalies(sensors, sensor_name="spiky", tz="Europe/Berlin")).json()
    assert result["windows"][0]["start"].endswith("+01:00")


@pytest.mark.parametrize("sensor_name", ["sparse", "calm"])
async def test_too_few_readings_get_an_explained_empty_result(
    sensors: IngestEnvironment, sensor_name: str
) -> None:
    # sparse has 10 readings; calm has none in this hour.
    response = await sensors.client.get(
        "/anomalies",
        params={"sensor_name": sensor_name, "start": "2013-01-01", "end": "2013-01-01T01:00"},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["parameters"] is None
    assert body["segments"] == []
    assert "at least 24 are needed" in body["explanation"][0]


async def test_parameters_are_used_and_reported(sensors: IngestEnvironment) -> None:
    result = (
        await anomalies(
            sensors,
            sensor_name="spiky",
            method="pelt",
            model="constant",
            penalty="50",
            threshold="6",
            min_segment="2d",
            direction="down",
            seasonality="none",
        )
    ).json()
    used = result["parameters"]
    assert (used["method"], used["model"], used["penalty"], used["threshold"]) == (
        "pelt",
        "constant",
        50.0,
        6.0,
    )
    assert (used["min_segment_seconds"], used["direction"]) == (172800.0, "down")
    assert result["windows"] == []  # the spike goes up
    assert "method=pelt" in result["plot_url"]


async def test_n_bkps_sets_the_number_of_change_points(sensors: IngestEnvironment) -> None:
    result = (await anomalies(sensors, sensor_name="spiky", n_bkps=2)).json()
    assert len(result["change_points"]) == 2


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"penalty": "lots"}, "penalty"),
        ({"penalty": "-3"}, "penalty"),
        ({"penalty": "nan"}, "penalty"),
        ({"threshold": "0.1"}, "threshold"),
        ({"min_segment": "a while"}, "min_segment"),
        ({"min_segment": "5s"}, "min_segment"),
        ({"n_bkps": "2", "method": "pelt"}, "n_bkps"),
        ({"n_bkps": "2", "penalty": "10"}, "n_bkps"),
        ({"start": "yesterday"}, "start"),
        ({"end": "2012-12-01T00:00:00Z"}, "end"),
        ({"tz": "Mars/Olympus"}, "tz"),
    ],
)
async def test_bad_parameters_get_422_naming_them(
    sensors: IngestEnvironment, params: dict[str, str], parameter: str
) -> None:
    response = await anomalies(sensors, sensor_name="spiky", **params)
    assert response.status_code == 422, response.text
    assert parameter in str(response.json()["detail"])


@pytest.mark.parametrize(
    "params",
    [{"method": "magic"}, {"model": "cubic"}, {"direction": "sideways"}, {"n_bkps": "-1"}],
)
async def test_bad_choices_get_422(sensors: IngestEnvironment, params: dict[str, str]) -> None:
    response = await anomalies(sensors, sensor_name="spiky", **params)
    assert response.status_code == 422, response.text


async def test_an_unknown_sensor_gets_404_naming_it(sensors: IngestEnvironment) -> None:
    for path in ("/anomalies", "/anomalies/plot"):
        response = await sensors.client.get(path, params={**RANGE, "sensor_name": "nope"})
        assert response.status_code == 404
        assert "nope" in response.json()["detail"]


async def test_the_plot_is_a_png_of_the_analysis(sensors: IngestEnvironment) -> None:
    response = await sensors.client.get(
        "/anomalies/plot", params={**RANGE, "sensor_name": "spiky", "tz": "Europe/Berlin"}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(response.content))
    image.verify()
    assert image.format == "PNG"
    assert image.size == (1400, 600)


async def test_the_plot_url_of_a_result_draws_it(sensors: IngestEnvironment) -> None:
    result = (await anomalies(sensors, sensor_name="spiky", threshold="7")).json()
    response = await sensors.client.get(result["plot_url"])
    assert response.status_code == 200
    assert response.content.startswith(b"\x89PNG\r\n\x1a\n")


async def test_a_range_over_the_point_limit_gets_422_naming_it(
    sensors: IngestEnvironment,
) -> None:
    limited = sensors.settings.model_copy(update={"analysis_max_points": 1000})
    async with running_app(limited) as client:
        response = await client.get("/anomalies", params={**RANGE, "sensor_name": "spiky"})
    assert response.status_code == 422
    assert "1,000 readings" in response.json()["detail"]
