/* comfyq run pages.
 *
 * The pages themselves hold no data. This script asks for an API token once, keeps it in this
 * tab's sessionStorage and sends it as "Authorization: Bearer" with every request for data. It
 * loads server-rendered fragments (the runs table, one run) and keeps their live values
 * (status, progress, durations) current by polling small JSON answers; a fragment is rendered
 * again only when something beyond those values changed. Output images are fetched with the
 * token and shown from blob: URLs, since an <img> cannot send the header itself.
 */
"use strict";

(() => {
  const TOKEN_KEY = "comfyq.apiToken";
  const LIVE_INTERVAL_MS = 500;
  const CALM_INTERVAL_MS = 2000;
  // Only these types are ever given to the browser to render; any other file is a download.
  const IMAGE_TYPES = new Set(["image/png", "image/jpeg", "image/webp", "image/gif"]);

  const login = document.getElementById("login");
  const loginForm = document.getElementById("login-form");
  const loginError = document.getElementById("login-error");
  const content = document.getElementById("content");
  const notice = document.getElementById("notice");
  const signOutButton = document.getElementById("sign-out");

  class Unauthorized extends Error {}

  let session = 0;
  let timer = null;
  let objectUrls = [];

  const storedToken = () => sessionStorage.getItem(TOKEN_KEY);

  function request(url, token = storedToken()) {
    return fetch(url, {headers: {Authorization: `Bearer ${token}`}, cache: "no-store"});
  }

  async function problem(answer) {
    let detail = answer.statusText;
    try {
      const body = await answer.json();
      detail = Array.isArray(body.detail)
        ? body.detail.map((item) => `${item.loc.slice(1).join(".")}: ${item.msg}`).join("; ")
        : body.detail ?? detail;
    } catch {
      // not JSON: the status text says enough
    }
    return `${answer.status} ${detail}`;
  }

  async function getData(url) {
    const answer = await request(url);
    if (answer.status === 401) {
      signOut("The server refused the token; sign in again.");
      throw new Unauthorized();
    }
    if (!answer.ok) throw new Error(await problem(answer));
    return answer;
  }

  function setNotice(text) {
    if (notice.textContent !== text) notice.textContent = text;
  }

  function note(text) {
    const element = document.createElement("span");
    element.className = "problem";
    element.textContent = text;
    return element;
  }

  // --- live values ---------------------------------------------------------------------------

  function applyLive(scope, values) {
    for (const element of scope.querySelectorAll("[data-live]")) {
      const name = element.dataset.live;
      if (!(name in values)) continue;
      const value = values[name];
      if (element instanceof HTMLProgressElement) {
        element.value = value;
        element.textContent = `${value}%`;
      } else if (element.textContent !== String(value)) {
        element.textContent = value;
      }
      if (name === "status") element.dataset.status = value;
      if (name === "live_status") element.title = value;
    }
  }

  // --- output files --------------------------------------------------------------------------

  function releaseObjectUrls() {
    objectUrls.forEach((url) => URL.revokeObjectURL(url));
    objectUrls = [];
  }

  async function fileBlob(url) {
    const answer = await getData(url);
    const type = (answer.headers.get("content-type") || "").split(";")[0].trim();
    const blob = await answer.blob();
    return blob.slice(0, blob.size, IMAGE_TYPES.has(type) ? type : "application/octet-stream");
  }

  function objectUrl(blob) {
    const url = URL.createObjectURL(blob);
    objectUrls.push(url);
    return url;
  }

  async function showImage(image) {
    try {
      const url = objectUrl(await fileBlob(image.dataset.src));
      image.src = url;
      const link = image.closest("a");
      link.href = url;
      link.target = "_blank";
      link.rel = "noopener";
    } catch (error) {
      if (!(error instanceof Unauthorized)) image.replaceWith(note(error.message));
    }
  }

  async function download(event) {
    event.preventDefault();
    const link = event.currentTarget;
    try {
      const saver = document.createElement("a");
      saver.href = objectUrl(await fileBlob(link.dataset.file));
      saver.download = link.dataset.download;
      saver.click();
    } catch (error) {
      if (!(error instanceof Unauthorized)) link.after(note(` ${error.message}`));
    }
  }

  function loadFiles(scope) {
    scope.querySelectorAll("img[data-src]").forEach(showImage);
    scope.querySelectorAll("a[data-download]").forEach((link) => {
      link.addEventListener("click", download);
    });
  }

  // --- the pages -----------------------------------------------------------------------------

  function dataQuery() {
    const params = new URLSearchParams(location.search);
    for (const [name, value] of [...params]) if (!value) params.delete(name);
    const text = params.toString();
    return text ? `?${text}` : "";
  }

  function showFilters() {
    const params = new URLSearchParams(location.search);
    for (const select of document.querySelectorAll(".filters select")) {
      const value = params.get(select.name);
      if (value) select.value = value;
    }
  }

  const runsView = {
    loaded: false,
    holder: () => document.getElementById("runs"),
    async load() {
      const answer = await getData(`fragments/runs${dataQuery()}`);
      this.holder().innerHTML = await answer.text();
      this.loaded = true;
      return LIVE_INTERVAL_MS;
    },
    async refresh() {
      const {runs} = await (await getData(`live/runs${dataQuery()}`)).json();
      const rows = [...this.holder().querySelectorAll("tr[data-run-id]")];
      const same = rows.length === runs.length && runs.every(
        (run, index) => rows[index].dataset.runId === run.id
          && rows[index].dataset.status === run.status);
      if (!same) return this.load();
      runs.forEach((run, index) => applyLive(rows[index], run));
      // New runs may appear at any time; a table of finished runs is looked at less often.
      return runs.some((run) => !run.final) ? LIVE_INTERVAL_MS : CALM_INTERVAL_MS;
    },
  };

  const runView = {
    loaded: false,
    revision: null,
    runId: document.body.dataset.runId || "",
    holder: () => document.getElementById("run"),
    path(kind) {
      return `${kind}/runs/${encodeURIComponent(this.runId)}`;
    },
    async load() {
      const answer = await getData(this.path("fragments"));
      const html = await answer.text();
      releaseObjectUrls();
      const holder = this.holder();
      holder.innerHTML = html;
      this.revision = holder.querySelector("[data-revision]").dataset.revision;
      this.loaded = true;
      loadFiles(holder);
      return LIVE_INTERVAL_MS;
    },
    async refresh() {
      const live = await (await getData(this.path("live"))).json();
      if (live.revision !== this.revision) await this.load();
      else applyLive(this.holder(), live);
      return live.final ? CALM_INTERVAL_MS : LIVE_INTERVAL_MS;
    },
  };

  const view = document.body.dataset.page === "run" ? runView : runsView;

  async function poll(ownSession) {
    if (ownSession !== session) return;
    let delay = CALM_INTERVAL_MS;
    try {
      if (!document.hidden || !view.loaded) {
        delay = await (view.loaded ? view.refresh() : view.load());
      }
      setNotice("");
    } catch (error) {
      if (error instanceof Unauthorized) return;
      setNotice(`Could not refresh: ${error.message}. Trying again.`);
    }
    if (ownSession === session) timer = setTimeout(poll, delay, ownSession);
  }

  function start() {
    session += 1;
    login.hidden = true;
    content.hidden = false;
    signOutButton.hidden = false;
    loginError.textContent = "";
    if (view === runView && !runView.runId) {
      setNotice("No run id in the address: open a run from Recent runs.");
      return;
    }
    poll(session);
  }

  function signOut(message) {
    session += 1;
    clearTimeout(timer);
    sessionStorage.removeItem(TOKEN_KEY);
    releaseObjectUrls();
    // Nothing fetched with the token stays on the page.
    view.holder().replaceChildren();
    view.loaded = false;
    setNotice("");
    content.hidden = true;
    signOutButton.hidden = true;
    login.hidden = false;
    loginError.textContent = message;
    loginForm.elements.token.focus();
  }

  loginForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const token = loginForm.elements.token.value.trim();
    loginError.textContent = "";
    try {
      const answer = await request("live/runs?limit=1", token);
      if (answer.status === 401) {
        loginError.textContent = "That token was refused.";
        return;
      }
      if (!answer.ok) {
        loginError.textContent = `The server answered ${await problem(answer)}.`;
        return;
      }
    } catch (error) {
      loginError.textContent = `Could not check the token: ${error.message}`;
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    loginForm.reset();
    start();
  });

  signOutButton.addEventListener("click", () => signOut(""));

  showFilters();
  if (storedToken()) {
    start();
  } else {
    login.hidden = false;
    loginForm.elements.token.focus();
  }
})();
