// Small DOM helpers: elements are built, never parsed from strings.
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "text") el.textContent = value;
    else el.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

// A table: columns are [heading, cell(row), numeric?].
export function table(columns, rows, empty) {
  if (!rows.length) return h("p", { class: "muted" }, empty || "Nothing here.");
  const head = h("tr", {}, columns.map(([name, , num]) => h("th", { class: num ? "num" : "", scope: "col" }, name)));
  const body = rows.map((row) =>
    h("tr", {}, columns.map(([, cell, num]) => h("td", { class: num ? "num" : "" }, cell(row)))),
  );
  return h("div", { class: "scroll" }, h("table", {}, h("thead", {}, head), h("tbody", {}, body)));
}

export const stateName = (state) => String(state || "").replace(/^STATE_|^STATUS_/, "").toLowerCase().replace(/_/g, " ");

export function when(stamp) {
  if (!stamp) return "";
  const date = new Date(stamp);
  return Number.isNaN(date.getTime()) ? stamp : date.toLocaleString();
}

export function ago(stamp) {
  if (!stamp) return "";
  const seconds = Math.max(0, Math.round((Date.now() - new Date(stamp).getTime()) / 1000));
  return seconds < 120 ? `${seconds} s ago` : `${Math.round(seconds / 60)} min ago`;
}

export const pretty = (value) => (value === undefined || value === null ? "null" : JSON.stringify(value, null, 2));

export function copyButton(text, label) {
  return h("button", {
    type: "button",
    "aria-label": label,
    onclick: async (event) => {
      try {
        await navigator.clipboard.writeText(text);
        event.target.textContent = "Copied";
      } catch {
        event.target.textContent = "Copy failed";
      }
    },
  }, "Copy");
}
