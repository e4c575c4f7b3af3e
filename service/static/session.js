// Who is signed in: a personal token (`loopline users add`) checked with GET /api/me and kept in
// sessionStorage — this tab only, gone when it closes. Buttons show only what the role allows.
import { getJSON, postJSON } from "./api.js";

const TOKEN_KEY = "loopline.token";
const USER_KEY = "loopline.user";
const listeners = new Set();

export function user() {
  try { return JSON.parse(sessionStorage.getItem(USER_KEY) || "null"); } catch { return null; }
}

/** May the signed-in user do ``action`` (approve, reject, retry, cancel, promote, rollback)? */
export const may = (action) => Boolean(user()?.may?.includes(action));

export const onChange = (fn) => listeners.add(fn);
const changed = () => listeners.forEach((fn) => fn(user()));

/** Check ``token`` with the server; on success it is kept for this tab. Throws ApiError. */
export async function signIn(token) {
  const me = await getJSON("me", null, token);
  sessionStorage.setItem(TOKEN_KEY, token);
  sessionStorage.setItem(USER_KEY, JSON.stringify({ name: me.name, role: me.role, may: me.may }));
  changed();
  return me;
}

export function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(USER_KEY);
  changed();
}

/** A human action as the signed-in user; a refused token signs out (it was removed or is wrong). */
export async function act(path, body = {}) {
  try {
    return await postJSON(path, body, sessionStorage.getItem(TOKEN_KEY) || "");
  } catch (err) {
    if (err.status === 401) signOut();
    throw err;
  }
}
