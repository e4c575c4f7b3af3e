// Safe DOM construction: every string becomes a text node or an attribute value, never markup.
// API payloads are hostile; nothing here touches innerHTML, outerHTML or insertAdjacentHTML.

const SVG_NS = "http://www.w3.org/2000/svg";

/** Only http(s) URLs and in-page links may become hrefs (no javascript:, data:, …). */
export function safeHref(value) {
  const text = String(value ?? "");
  if (text.startsWith("#")) return text;
  try {
    const url = new URL(text, document.baseURI);
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
  } catch {
    return null;
  }
}

function setProps(el, props) {
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.setAttribute("class", String(value));
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "href") {
      const href = safeHref(value);
      if (href !== null) el.setAttribute("href", href);
    } else if (key.startsWith("on") || key === "style" || key === "srcdoc") {
      throw new Error(`refusing to set ${key} from data`);
    } else el.setAttribute(key, value === true ? "" : String(value));
  }
}

function appendAll(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** h("td", {class: "x"}, "text", otherNode, [more]) — an HTML element. */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  setProps(el, props);
  appendAll(el, children);
  return el;
}

/** The same for SVG elements. */
export function s(tag, props, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setProps(el, props);
  appendAll(el, children);
  return el;
}

/** Replace a container's children, keeping keyboard focus on the "same" control if it is rebuilt. */
export function replace(container, ...children) {
  const active = document.activeElement;
  const key = active && container.contains(active) ? active.dataset.focusKey : undefined;
  container.replaceChildren();
  appendAll(container, children);
  if (key) {
    for (const el of container.querySelectorAll("[data-focus-key]")) {
      if (el.dataset.focusKey === key) { el.focus({ preventScroll: true }); break; }
    }
  }
}

/** Re-render only when the signature of what is shown changed (keeps focus, hover and scroll). */
const signatures = new WeakMap();
export function renderIfChanged(container, signature, build) {
  if (signatures.get(container) === signature) return false;
  signatures.set(container, signature);
  build();
  return true;
}
