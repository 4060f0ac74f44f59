"""The run pages in a real headless Chromium, served by ``comfyq api`` against the session's fleet.

Playwright drives Debian's ``chromium`` (``.ci/run`` installs it; Playwright's own browser
download is never used). The tests do what an operator does: sign in with the API token, look
at the runs table and at one run, and check what the page shows. Set ``COMFYQ_TEST_SCREENSHOTS``
to a folder to keep a screenshot of each page looked at.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import Browser, Page, expect, sync_playwright

from comfyq import RunStatus
from comfyq.devtools.local_receiver import WebhookReceiver
from comfyq.redis import keys
from comfyq.web.output_access import OutputItem, OutputRefused, output_path
from tests.e2e.test_api import api_process
from tests.helpers import invert_graph, request
from tests.ops_helpers import GatedImageServer, held_graph, png_bytes, wait_until

TOKEN = "web-token"
CHROMIUM = os.environ.get("COMFYQ_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
#: Longest any page expectation waits (the pages poll every 0.5 s).
PAGE_TIMEOUT_MS = 20_000
HTTP_TIMEOUT = 30


# --- servers and browser ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def api(fleet, fleet_settings, tmp_path_factory) -> Iterator[str]:
    """``comfyq api`` in its own process against the session's fleet; yields its root URL."""
    env, _ = fleet_settings
    log = tmp_path_factory.mktemp("web-api") / "api.log"
    with api_process({**os.environ, **env, "COMFYQ_API_TOKENS": TOKEN}, log) as root:
        yield root


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        reason = (f"no Chromium at {CHROMIUM}: install Debian's chromium "
                  "(apt-get install chromium; .ci/run does) or set COMFYQ_TEST_CHROMIUM")
        # CI installs it, so there a missing browser is a failure, never a silent skip; on a
        # machine with only Python the browser tests are skipped, saying why.
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    opened = context.new_page()
    problems: list[str] = []
    opened.on("pageerror", lambda error: problems.append(str(error)))
    # A style, script or image the page's Content-Security-Policy blocks is only a console line.
    opened.on("console", lambda message: problems.append(message.text)
              if message.type == "error" and "Content Security Policy" in message.text else None)
    try:
        yield opened
    finally:
        context.close()
    assert not problems, f"the page's script failed or was blocked: {problems}"


def look(page: Page, name: str) -> None:
    """Keep a screenshot of the page when COMFYQ_TEST_SCREENSHOTS names a folder."""
    folder = os.environ.get("COMFYQ_TEST_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def sign_in(page: Page, url: str, token: str = TOKEN) -> None:
    page.goto(url)
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()


def stored_token(page: Page) -> str | None:
    return page.evaluate("sessionStorage.getItem('comfyq.apiToken')")


def get(root: str, path: str, token: str | None = TOKEN) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return requests.get(f"{root}{path}", headers=headers, timeout=HTTP_TIMEOUT)


def batch_graph(prefix: str) -> dict[str, Any]:
    """A batch of external images -> invert -> save: its first node reports each download."""
    return {
        "1": {"class_type": "ComfyUIDeployExternalImageBatch",
              "inputs": {"input_id": "pictures", "images": "[]"}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    }


@pytest.fixture(scope="module")
def finished_run(api, fleet_settings) -> str:
    """A successful run with a 24 px wide output image and two inputs."""
    from comfyq import Client

    client = Client(settings=fleet_settings[1])
    run_id = client.submit(request(invert_graph(), inputs={"width": 24, "prefix": "thumbs"}))
    assert client.wait(run_id, 60).status == RunStatus.SUCCESS
    return run_id


# --- signing in -------------------------------------------------------------------------------


def data_paths(run_id: str) -> list[str]:
    return ["/ui/fragments/runs", "/ui/live/runs", f"/ui/fragments/runs/{run_id}",
            f"/ui/live/runs/{run_id}", f"/ui/files/{run_id}/0", "/metrics"]


@pytest.mark.parametrize("token", [None, "wrong-token"])
def test_without_the_token_no_data_is_served(api, finished_run, token):
    for path in data_paths(finished_run):
        answer = get(api, path, token=token)
        assert answer.status_code == 401, path
        assert answer.json() == {"detail": "missing or invalid bearer token"}
    # The pages themselves are public and hold no run data.
    bare = requests.get(f"{api}/ui", allow_redirects=False, timeout=HTTP_TIMEOUT)
    assert bare.status_code == 308 and bare.headers["location"] == "ui/"
    for path in ("/ui/", f"/ui/run?id={finished_run}"):
        shell = get(api, path, token=None)
        assert shell.status_code == 200 and shell.headers["content-type"].startswith("text/html")
        assert "thumbs" not in shell.text and "data-live" not in shell.text
        assert "script-src 'self'" in shell.headers["content-security-policy"]


def test_the_page_asks_for_a_token_and_refuses_a_wrong_one(api, finished_run, page):
    sign_in(page, f"{api}/ui/", token="not-the-token")
    expect(page.get_by_role("alert")).to_have_text("That token was refused.")
    expect(page.locator("#content")).to_be_hidden()
    assert page.locator("tr[data-run-id]").count() == 0
    assert stored_token(page) is None
    look(page, "sign-in")


def test_signed_in_the_token_is_kept_for_the_tab_until_sign_out(api, finished_run, page):
    sign_in(page, f"{api}/ui/")
    expect(page.locator(f'tr[data-run-id="{finished_run}"]')).to_be_visible()
    assert stored_token(page) == TOKEN
    page.reload()
    expect(page.locator(f'tr[data-run-id="{finished_run}"]')).to_be_visible()
    expect(page.locator("#login")).to_be_hidden()

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert page.locator("tr[data-run-id]").count() == 0
    assert stored_token(page) is None


# --- what the pages show ----------------------------------------------------------------------


def test_a_finished_runs_row_and_page_show_its_thumbnail_and_inputs(api, finished_run, page):
    sign_in(page, f"{api}/ui/")
    row = page.locator(f'tr[data-run-id="{finished_run}"]')
    expect(row.locator(".status")).to_have_text("success")
    expect(row.locator("td").nth(2)).to_have_text("T4")
    expect(row.locator('[data-live="worker"]')).to_contain_text("@")
    expect(row.locator('[data-live="percent_text"]')).to_have_text("100%")
    expect(row.locator('[data-live="run_time"]')).to_have_text(re.compile(r"^\d+(\.\d)? s$"))
    look(page, "runs")

    row.get_by_role("link").click()
    expect(page).to_have_url(f"{api}/ui/run?id={finished_run}")
    expect(page.locator("#login")).to_be_hidden()  # the tab kept the token
    thumbnail = page.get_by_role("img", name="thumbs_00001_.png")
    expect(thumbnail).to_be_visible()
    page.wait_for_function("image => image.complete && image.naturalWidth > 0",
                           arg=thumbnail.element_handle())
    assert thumbnail.evaluate("image => image.naturalWidth") == 24
    inputs = page.locator("table.inputs tbody tr")
    expect(inputs).to_have_count(2)
    expect(inputs.nth(0)).to_contain_text("width")
    expect(inputs.nth(0)).to_contain_text("24")
    expect(inputs.nth(1)).to_contain_text("thumbs")
    expect(page.locator("section.error")).to_have_count(0)
    expect(page.get_by_text("This run has no webhook.")).to_be_visible()
    look(page, "run-success")


def test_a_running_runs_progress_moves_without_reloading(api, client, page):
    sign_in(page, f"{api}/ui/")
    expect(page.locator("#content")).to_be_visible()
    page.evaluate("window.notReloaded = true")
    with GatedImageServer(png_bytes(12, 12, (200, 40, 40))) as images:
        # As text: input_id takes the value too, and a list there is a link to the validator.
        run_id = client.submit(request(batch_graph("stepped"),
                                       inputs={"pictures": json.dumps(images.urls(5))}))
        row = page.locator(f'tr[data-run-id="{run_id}"]')
        expect(row.locator(".status")).to_have_text("running")
        progress = row.locator("progress")
        seen = [progress.evaluate("bar => bar.value")]
        for _ in range(2):
            images.step()
            page.wait_for_function("([bar, before]) => bar.value > before",
                                   arg=[progress.element_handle(), seen[-1]])
            seen.append(progress.evaluate("bar => bar.value"))
        expect(row.locator(".status")).to_have_text("running")
        expect(row.locator('[data-live="live_status"]')).to_contain_text(
            "Executing ComfyUIDeployExternalImageBatch (2/5)")
        look(page, "runs-running")
        assert page.evaluate("window.notReloaded") is True

        # The run's own page follows it the same way.
        row.get_by_role("link").click()
        page.evaluate("window.notReloaded = true")
        bar = page.locator("article.run progress")
        expect(page.locator("article.run .status")).to_have_text("running")
        before = bar.evaluate("bar => bar.value")
        images.step()
        page.wait_for_function("([bar, before]) => bar.value > before",
                               arg=[bar.element_handle(), before])
        look(page, "run-running")
        images.step()
        images.step()
        expect(page.locator("article.run .status")).to_have_text("success")
        expect(page.locator('article.run [data-live="percent_text"]')).to_have_text("100%")
        expect(page.get_by_role("img", name="stepped_00001_.png")).to_be_visible()
        assert page.evaluate("window.notReloaded") is True
    assert seen == sorted(seen) and len(set(seen)) == 3, seen


def test_a_failed_run_shows_its_failing_node_message_and_traceback(api, client, page):
    markup = '<b id="injected">bold</b>'
    run_id = client.submit(request(held_graph("doomed"), inputs={
        "picture": "http://127.0.0.1:9/missing.png", "note": markup}))
    assert client.wait(run_id, 60).status == RunStatus.FAILED

    sign_in(page, f"{api}/ui/run?id={run_id}")
    error = page.locator("section.error")
    expect(error.get_by_role("heading", name="Error")).to_be_visible()
    expect(error.locator(".failing-node")).to_have_text("#1 ComfyUIDeployExternalImage")
    expect(error.locator(".error-message")).to_contain_text("127.0.0.1:9")
    expect(page.locator("article.run .status")).to_have_text("failed")
    traceback = error.locator("pre.traceback")
    expect(traceback).to_be_hidden()  # folded until asked for
    error.get_by_text("Traceback", exact=True).click()
    expect(traceback).to_be_visible()
    expect(traceback).to_contain_text("Traceback (most recent call last)")
    expect(page.get_by_text("No outputs.")).to_be_visible()
    # Text from a run is shown as text, never as markup.
    expect(page.locator("table.inputs")).to_contain_text(markup)
    expect(page.locator("#injected")).to_have_count(0)
    look(page, "run-failed")

    page.goto(f"{api}/ui/?status=failed")
    expect(page.locator(f'tr[data-run-id="{run_id}"]')).to_be_visible()
    statuses = page.locator("tr[data-run-id] .status").all_inner_texts()
    assert set(statuses) == {"failed"}
    expect(page.get_by_label("Status")).to_have_value("failed")


def test_a_runs_webhook_deliveries_are_listed_with_their_outcomes(api, client, page):
    with WebhookReceiver(answers=[500]) as receiver:
        run_id = client.submit(request(webhook=receiver.url))
        assert client.wait(run_id, 60).status == RunStatus.SUCCESS
        wait_until(lambda: client.get_run(run_id).webhook_status == "delivered", timeout=30)

    sign_in(page, f"{api}/ui/run?id={run_id}")
    expect(page.locator(".webhook-status")).to_have_text("delivered")
    rows = page.locator("table.deliveries tbody tr")
    expect(rows).to_have_count(2)
    first, second = (rows.nth(index).locator("td") for index in range(2))
    expect(first.nth(1)).to_have_text("1")
    expect(first.nth(3)).to_have_text("500")
    expect(second.nth(1)).to_have_text("2")
    expect(second.nth(3)).to_have_text("200")
    look(page, "run-webhook")


# --- output files -----------------------------------------------------------------------------


def test_an_output_file_is_served_from_the_runs_folder(api, finished_run, fleet_settings):
    _, settings = fleet_settings
    answer = get(api, f"/ui/files/{finished_run}/0")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "image/png"
    on_disk = settings.output_dir / finished_run / "thumbs_00001_.png"
    assert answer.content == on_disk.read_bytes()
    missing = get(api, f"/ui/files/{finished_run}/1")
    assert missing.status_code == 404 and "no output file number 1" in missing.json()["detail"]
    assert get(api, "/ui/files/no-such-run/0").status_code == 404


@pytest.fixture
def crafted_run(redis_client, finished_run) -> Iterator[Any]:
    """Makes copies of the finished run whose output record names another file."""
    made: list[str] = []

    def make(subfolder: str, filename: str, **fields: str) -> str:
        run_id = f"crafted-{uuid.uuid4()}"
        record = redis_client.hgetall(keys.run(finished_run))
        outputs = json.loads(record["outputs"])
        outputs[0]["data"]["images"][0].update(subfolder=subfolder, filename=filename, **fields)
        record.update(id=json.dumps(run_id), outputs=json.dumps(outputs))
        redis_client.hset(keys.run(run_id), mapping=record)
        made.append(run_id)
        return run_id

    yield make
    for run_id in made:
        redis_client.delete(keys.run(run_id))


@pytest.mark.parametrize("subfolder,filename", [
    ("{run}", "thumbs_00001_.png"),                   # another run's file
    ("..", "outputs/{run}/thumbs_00001_.png"),        # the same, through ..
    ("", "/etc/hostname"),                            # an absolute path
])
def test_a_record_naming_a_file_outside_the_runs_folder_is_refused(api, finished_run,
                                                                    crafted_run, subfolder,
                                                                    filename):
    run_id = crafted_run(subfolder.format(run=finished_run), filename.format(run=finished_run))
    answer = get(api, f"/ui/files/{run_id}/0")
    assert answer.status_code == 403
    assert "outside the run's outputs folder" in answer.json()["detail"]


def test_a_symlink_out_of_the_runs_folder_is_refused(tmp_path):
    secret = tmp_path / "secret.png"
    secret.write_bytes(png_bytes())
    (tmp_path / "outputs" / "run-1").mkdir(parents=True)
    (tmp_path / "outputs" / "run-1" / "link.png").symlink_to(secret)
    item = OutputItem(0, "3", "images", "link.png", "run-1", "output")
    with pytest.raises(OutputRefused, match="outside the run's outputs folder"):
        output_path(tmp_path / "outputs", "run-1", item)


def test_a_published_output_links_to_its_public_copy(api, crafted_run, finished_run):
    public = "https://cdn.example.test/outputs/thumbs_00001_.png"
    run_id = crafted_run(finished_run, "thumbs_00001_.png", url=public)
    fragment = get(api, f"/ui/fragments/runs/{run_id}")
    assert fragment.status_code == 200
    assert f'href="{public}"' in fragment.text and "published copy" in fragment.text


# --- metrics ----------------------------------------------------------------------------------


def test_the_api_serves_metrics_with_the_token(api, finished_run):
    answer = get(api, "/metrics")
    assert answer.status_code == 200
    assert "comfyq_runs_submitted_total" in answer.text
    assert 'comfyq_workers_online{gpu_type="T4"} 1.0' in answer.text
