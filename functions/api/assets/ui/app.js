// pixpress web page: submit a CSV, follow its request, compare images, download the output CSV.
// Plain JavaScript against the API this page is served by (no build step, no other origin but
// the image hosts and, for large CSVs, the presigned upload URL).

const KEY_STORAGE = "pixpress.apiKey"; // sessionStorage: this tab only
const RECENT_STORAGE = "pixpress.recent"; // localStorage: ids and names, never the key
const RECENT_MAX = 20;
const DIRECT_UPLOAD_MAX_BYTES = 4603904; // POST /uploads' default limit (6 MB after base64)
const UPLOAD_RETRIES = 3; // after a network error or a 5xx, waiting 1 s, 2 s, 4 s
const PRODUCTS_SHOWN_MAX = 1000;

const $ = (id) => document.getElementById(id);
const state = { requestId: null, timer: null, file: null, upload: null };

// The API's base: the directory this page was served from (works under a stage prefix too).
const api = (path) => new URL(path, document.baseURI).toString();

function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

function authHeaders() {
  const key = apiKey();
  return key ? { authorization: `Bearer ${key}` } : {};
}

async function call(path, options = {}) {
  const response = await fetch(api(path), {
    ...options,
    headers: { ...authHeaders(), ...(options.headers || {}) },
  });
  if (response.status === 401) {
    $("key-state").textContent = "The API refused this key: enter a valid key (pk_…).";
    $("key-state").classList.add("error");
  }
  return response;
}

async function problemText(response) {
  try {
    const problem = await response.json();
    return problem.detail || problem.title || `HTTP ${response.status}`;
  } catch {
    return `HTTP ${response.status}`;
  }
}

function bytes(n) {
  if (n == null) return "";
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)} MB`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} kB`;
  return `${n} B`;
}

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "class") node.className = value;
    else if (value !== undefined && value !== null) node.setAttribute(name, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

// ---------------------------------------------------------------- API key
function showKeyState() {
  const state = $("key-state");
  state.classList.remove("error");
  state.textContent = apiKey() ? "A key is set for this tab." : "No key set: the API needs one.";
  $("api-key").value = "";
  $("api-key").placeholder = apiKey() ? "key set (enter another to replace it)" : "pk_…";
  updateSubmit();
}

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const key = $("api-key").value.trim();
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  showKeyState();
});

$("forget-key").addEventListener("click", () => {
  sessionStorage.removeItem(KEY_STORAGE);
  showKeyState();
});

// ---------------------------------------------------------------- choosing a CSV
function chooseFile(file) {
  state.file = file || null;
  $("drop-text").textContent = file
    ? `${file.name} (${bytes(file.size)})`
    : "Drop a CSV here or choose a file";
  updateSubmit();
}

function updateSubmit() {
  $("submit").disabled = !(state.file && apiKey());
}

$("file").addEventListener("change", () => chooseFile($("file").files[0]));
const drop = $("drop");
drop.addEventListener("dragover", (event) => {
  event.preventDefault();
  drop.classList.add("over");
});
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  chooseFile(event.dataTransfer.files[0]);
});

// ---------------------------------------------------------------- submitting
function options() {
  const query = new URLSearchParams();
  const format = $("format").value;
  const quality = $("quality").value.trim();
  const maxDimension = $("max-dimension").value.trim();
  const webhook = $("webhook-url").value.trim();
  if (format && format !== "jpeg") query.set("format", format);
  if (quality) query.set("quality", quality);
  if (maxDimension) query.set("max_dimension", maxDimension);
  if (webhook) query.set("webhook_url", webhook);
  return query;
}

function showUploadError(text, issues = []) {
  const box = $("upload-error");
  box.replaceChildren(el("p", {}, text));
  if (issues.length) {
    const list = el("ul", { id: "upload-issues" });
    for (const issue of issues) {
      const where = issue.row ? `row ${issue.row}` : "file";
      const column = issue.column ? `, column ${issue.column}` : "";
      list.append(el("li", {}, `${where}${column}: ${issue.message}`));
    }
    box.append(list);
  }
  box.hidden = false;
}

async function submit(event) {
  event.preventDefault();
  const file = state.file;
  if (!file) return;
  $("upload-error").hidden = true;
  $("submit").disabled = true;
  $("submit").textContent = "Sending…";
  try {
    const id = file.size <= DIRECT_UPLOAD_MAX_BYTES ? await postCsv(file) : await presignedUpload(file);
    if (id) {
      remember(id, file.name);
      openRequest(id);
    }
  } catch (error) {
    showUploadError(`The API could not be reached: ${error.message}`);
  } finally {
    $("submit").textContent = "Compress";
    updateSubmit();
  }
}

// One Idempotency-Key per upload (this file with these options): every retry of it, automatic
// or by pressing Compress again, finds the same request instead of making another.
function uploadKey(file, query) {
  const same = state.upload && state.upload.file === file && state.upload.query === query;
  if (!same) state.upload = { file, query, key: crypto.randomUUID() };
  return state.upload.key;
}

const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function postCsv(file) {
  const query = options().toString();
  const key = uploadKey(file, query);
  let response;
  for (let attempt = 0; ; attempt++) {
    try {
      response = await call(`uploads?${query}`, {
        method: "POST",
        headers: { "content-type": "text/csv", "idempotency-key": key },
        body: file,
      });
    } catch (error) {
      if (attempt >= UPLOAD_RETRIES) throw error;
      await pause(1000 * 2 ** attempt);
      continue;
    }
    const transient = [500, 502, 503, 504].includes(response.status);
    if (!transient || attempt >= UPLOAD_RETRIES) break;
    await pause(1000 * 2 ** attempt);
  }
  if (response.status === 413) return presignedUpload(file);
  if (!response.ok) {
    const problem = await response.json().catch(() => ({}));
    // More rows than one call takes: the presigned upload takes them.
    if ((problem.errors || []).some((e) => e.code === "too_many_rows")) return presignedUpload(file);
    showUploadError(problem.detail || `HTTP ${response.status}`, problem.errors || []);
    return null;
  }
  return (await response.json()).request_id;
}

async function presignedUpload(file) {
  const response = await call(`upload-urls?${options()}`, { method: "POST" });
  if (!response.ok) {
    showUploadError(await problemText(response));
    return null;
  }
  const target = await response.json();
  if (file.size > target.max_bytes) {
    showUploadError(`${file.name} is ${bytes(file.size)}; the API takes at most ${bytes(target.max_bytes)}.`);
    return null;
  }
  // S3 POST Object: every signed field as given, then the file last.
  const form = new FormData();
  for (const [name, value] of Object.entries(target.fields)) form.append(name, value);
  form.append("file", file);
  const upload = await fetch(target.upload_url, { method: "POST", body: form });
  if (!upload.ok) {
    showUploadError(`The upload was refused (HTTP ${upload.status}).`);
    return null;
  }
  return target.request_id;
}

$("upload-form").addEventListener("submit", submit);

// ---------------------------------------------------------------- recent requests
function recent() {
  try {
    return JSON.parse(localStorage.getItem(RECENT_STORAGE) || "[]");
  } catch {
    return [];
  }
}

function remember(id, name) {
  const list = [{ id, name, at: new Date().toISOString() }, ...recent().filter((r) => r.id !== id)];
  localStorage.setItem(RECENT_STORAGE, JSON.stringify(list.slice(0, RECENT_MAX)));
  showRecent();
}

function showRecent() {
  const list = $("recent");
  const items = recent();
  list.replaceChildren(
    ...items.map((item) => {
      const open = el("button", { type: "button", "data-request-id": item.id }, item.id);
      open.addEventListener("click", () => openRequest(item.id));
      return el("li", {}, open, ` ${item.name || ""} · ${new Date(item.at).toLocaleString()}`);
    }),
  );
  $("recent-empty").hidden = items.length > 0;
}

// ---------------------------------------------------------------- following a request
const TERMINAL = new Set(["COMPLETED", "COMPLETED_WITH_ERRORS", "FAILED", "CANCELLED"]);

function openRequest(id) {
  clearTimeout(state.timer);
  state.requestId = id;
  $("request-section").hidden = false;
  $("request-id").textContent = id;
  $("status").textContent = "…";
  $("status").className = "badge";
  $("summary").textContent = "";
  $("failure").hidden = true;
  $("download").disabled = true;
  $("cancel").hidden = true;
  $("retry").hidden = true;
  $("lineage").hidden = true;
  $("products").tBodies[0].replaceChildren();
  $("products-note").textContent = "";
  poll(id);
}

async function poll(id) {
  if (state.requestId !== id) return;
  let wait = 2000;
  try {
    const response = await call(`requests/${encodeURIComponent(id)}?limit=0`);
    if (response.status === 404) {
      // A presigned upload is unknown until the bucket trigger has ingested it.
      $("status").textContent = "WAITING";
      $("summary").textContent = "waiting for the upload to be ingested";
    } else if (!response.ok) {
      $("summary").textContent = await problemText(response);
    } else {
      const retryAfter = Number(response.headers.get("retry-after"));
      if (retryAfter > 0) wait = retryAfter * 1000;
      const summary = await response.json();
      showSummary(summary);
      if (TERMINAL.has(summary.status)) {
        await showProducts(id);
        return;
      }
      if (summary.progress.rows_done > 0) await showProducts(id);
    }
  } catch (error) {
    $("summary").textContent = `The API could not be reached: ${error.message}`;
  }
  state.timer = setTimeout(() => poll(id), Math.min(Math.max(wait, 500), 10000));
}

function showSummary(summary) {
  const p = summary.progress;
  const done = p.images_ok + p.images_failed;
  $("status").textContent = summary.status;
  $("status").className = `badge ${summary.status}`;
  $("progress").max = Math.max(p.images_total, 1);
  $("progress").value = done;
  const saved = p.bytes_in > 0 ? ` · ${bytes(p.bytes_in - p.bytes_out)} saved (${Math.round((1 - p.bytes_out / p.bytes_in) * 100)} %)` : "";
  $("summary").textContent = `${p.percent} % of rows`;
  $("counts").textContent = `rows ${p.rows_done}/${p.rows_total} · images ${done}/${p.images_total} (${p.images_failed} failed)${saved}`;
  if (summary.failure) {
    $("failure").textContent = `${summary.failure.code}: ${summary.failure.message}`;
    $("failure").hidden = false;
  }
  $("download").disabled = !summary.output_csv_url;
  $("cancel").hidden = TERMINAL.has(summary.status) || Boolean(summary.cancel_requested_at);
  const unfinished = p.images_total - p.images_ok;
  $("retry").hidden = !TERMINAL.has(summary.status) || unfinished === 0 || p.rows_total === 0 || Boolean(summary.retried_by);
  $("retry").textContent = `Retry ${unfinished} failed image${unfinished === 1 ? "" : "s"}`;
  const lineage = [];
  if (summary.retry_of) lineage.push(requestLink("A retry of request", summary.retry_of));
  if (summary.retried_by) lineage.push(requestLink("Retried as request", summary.retried_by));
  $("lineage").replaceChildren(...lineage);
  $("lineage").hidden = lineage.length === 0;
}

function requestLink(label, id) {
  const link = el("a", { href: "#" }, el("code", {}, id));
  link.addEventListener("click", (event) => {
    event.preventDefault();
    openRequest(id);
  });
  return el("span", { class: "link" }, `${label} `, link, " ");
}

async function showProducts(id) {
  const rows = [];
  let cursor = null;
  do {
    const query = new URLSearchParams({ limit: "100" });
    if (cursor) query.set("cursor", cursor);
    const response = await call(`requests/${encodeURIComponent(id)}?${query}`);
    if (!response.ok || state.requestId !== id) return;
    const page = await response.json();
    rows.push(...page.products);
    cursor = page.next_cursor;
  } while (cursor && rows.length < PRODUCTS_SHOWN_MAX);
  $("products").tBodies[0].replaceChildren(...rows.map(productRow));
  $("products-note").textContent = cursor
    ? `The first ${rows.length} products; the output CSV has them all.`
    : "";
}

function productRow(product) {
  const images = el("td", { class: "images" }, ...product.images.map(imageFigure));
  return el("tr", { "data-row": product.row }, el("td", {}, String(product.row)), el("td", {}, product.product_name), images);
}

function thumbnail(url, alt) {
  if (!/^https?:\/\//i.test(url || "")) return el("span", { class: "hint" }, "—");
  return el("img", { src: url, alt, loading: "lazy", referrerpolicy: "no-referrer" });
}

function imageFigure(image) {
  if (image.status === "FAILED") {
    return el(
      "figure",
      { class: "image failed" },
      thumbnail(image.input_url, "input"),
      el("span", {}, "✕"),
      el("figcaption", {}, `${image.error_code}: ${image.error || ""}`),
    );
  }
  if (image.status !== "OK") {
    return el("figure", { class: "image" }, thumbnail(image.input_url, "input"), el("span", {}, "…"), el("figcaption", {}, "pending"));
  }
  const saved = image.bytes_in > 0 ? Math.round((1 - image.bytes_out / image.bytes_in) * 100) : 0;
  return el(
    "figure",
    { class: "image ok" },
    thumbnail(image.input_url, "before"),
    el("a", { href: image.output_url, target: "_blank", rel: "noopener" }, thumbnail(image.output_url, "after")),
    el(
      "figcaption",
      {},
      `${bytes(image.bytes_in)} → ${bytes(image.bytes_out)} `,
      el("span", { class: "saved" }, `−${saved} %`),
      image.width ? ` · ${image.width}×${image.height} px` : "",
      image.score !== undefined ? ` · SSIMULACRA2 ${image.score.toFixed(1)}` : "",
      image.quality !== undefined ? ` at q${image.quality}` : "",
    ),
  );
}

// ---------------------------------------------------------------- cancelling
$("cancel").addEventListener("click", async () => {
  const id = state.requestId;
  const response = await call(`requests/${encodeURIComponent(id)}/cancel`, { method: "POST" });
  if (!response.ok) {
    $("summary").textContent = await problemText(response);
    return;
  }
  $("cancel").hidden = true;
  $("summary").textContent = "cancelling: rows in flight finish, the rest end as cancelled";
});

// ---------------------------------------------------------------- retrying
$("retry").addEventListener("click", async () => {
  const id = state.requestId;
  const response = await call(`requests/${encodeURIComponent(id)}/retry`, { method: "POST" });
  if (!response.ok) {
    $("summary").textContent = await problemText(response);
    return;
  }
  const retry = await response.json();
  remember(retry.request_id, `retry of ${id.slice(0, 8)}`);
  openRequest(retry.request_id);
});

// ---------------------------------------------------------------- output CSV
$("download").addEventListener("click", async () => {
  const id = state.requestId;
  // The API answers with the CSV or a 303 to a presigned link, which fetch follows.
  const response = await call(`requests/${encodeURIComponent(id)}/output.csv`);
  if (!response.ok) {
    $("summary").textContent = await problemText(response);
    return;
  }
  const url = URL.createObjectURL(await response.blob());
  const link = el("a", { href: url, download: `${id}.csv` });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
});

showKeyState();
showRecent();
