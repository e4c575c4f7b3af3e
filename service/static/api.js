// The JSON API client: every failure becomes an ApiError carrying the server's {error, message}.

const BASE = new URL("api/", document.baseURI);

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function url(path, params) {
  const u = new URL(path, BASE);
  for (const [key, value] of Object.entries(params || {})) {
    if (value !== null && value !== undefined && value !== "") u.searchParams.set(key, value);
  }
  return u;
}

async function request(path, params, accept, init = {}) {
  let response;
  try {
    response = await fetch(url(path, params), { ...init, headers: { Accept: accept, ...init.headers }, cache: "no-store" });
  } catch {
    throw new ApiError(0, "network_error", "cannot reach the Loopline server");
  }
  if (!response.ok) {
    let body = null;
    try { body = await response.json(); } catch { /* not JSON: fall back to the status line */ }
    const code = body && typeof body.error === "string" ? body.error : `http_${response.status}`;
    const message = body && typeof body.message === "string" ? body.message : response.statusText || "request failed";
    throw new ApiError(response.status, code, message);
  }
  return response;
}

export async function getJSON(path, params, token = null) {
  const init = token ? { headers: { Authorization: `Bearer ${token}` } } : {};
  const response = await request(path, params, "application/json", init);
  try {
    return await response.json();
  } catch {
    throw new ApiError(response.status, "bad_response", "the server did not answer with JSON");
  }
}

/** A stage log, or (``after``) what follows that byte; ``offset`` is where the next read starts. */
export async function getLog(path, params) {
  const response = await request(path, params, "text/plain");
  const offset = Number(response.headers.get("X-Log-Offset"));
  return { text: await response.text(), offset: Number.isFinite(offset) ? offset : null };
}

/** A human action (approve, reject, …) with the signed-in user's token; answers JSON. */
export async function postJSON(path, body, token) {
  const response = await request(path, null, "application/json", {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
    body: JSON.stringify(body),
  });
  return response.json();
}

/** A path segment, encoded (names come from data). */
export const seg = (value) => encodeURIComponent(String(value));
