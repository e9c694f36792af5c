// The dtq console: hash routes, one page at a time, every API error shown.
import { ApiError, apiKey, setApiKey } from "./api.js";
import { h } from "./dom.js";
import { pages } from "./pages.js";

const main = document.getElementById("main");
const errorBox = document.getElementById("error");
const logout = document.getElementById("logout");
let timer = 0;
let generation = 0;
const config = fetch("/ui/config.json").then((r) => r.json()).catch(() => ({}));

export function showError(error) {
  if (!error) {
    errorBox.hidden = true;
    errorBox.textContent = "";
    return;
  }
  const extra = error instanceof ApiError && error.reason ? ` (${error.reason})` : "";
  errorBox.textContent = `Error: ${error.message}${extra}`;
  errorBox.hidden = false;
}

function parse() {
  const raw = location.hash.replace(/^#\/?/, "") || "overview";
  const [path, search] = raw.split("?");
  const [page, ...rest] = path.split("/");
  return { page, args: rest.map(decodeURIComponent), query: new URLSearchParams(search || "") };
}

function login(ctx) {
  const input = h("input", { id: "api-key", type: "password", autocomplete: "off", required: true });
  return h("section", { class: "login" },
    h("h1", {}, "Log in"),
    h("p", {}, "This server asks for an API key (dtq apikey create). It is kept in this browser tab only."),
    h("form", {
      class: "bar",
      onsubmit: (event) => {
        event.preventDefault();
        setApiKey(input.value.trim());
        ctx.navigate(ctx.next || "#/overview");
      },
    }, h("label", { for: "api-key" }, "API key", input), h("button", { type: "submit" }, "Log in")));
}

function keepFocus(replace) {
  const key = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.key : "";
  replace();
  if (key) {
    const again = main.querySelector(`[data-key="${CSS.escape(key)}"]`);
    if (again) again.focus();
  }
}

async function render(refreshing = false) {
  const mine = ++generation;
  clearTimeout(timer);
  const route = parse();
  for (const link of document.querySelectorAll("nav a")) {
    const current = link.dataset.page === (route.page === "task" ? "tasks" : route.page);
    if (current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  logout.hidden = !apiKey();
  const ctx = {
    ...route,
    config: await config,
    navigate: (hash) => {
      if (location.hash === hash) render();
      else location.hash = hash;
    },
    rerender: () => render(true),
    refreshEvery: (ms) => {
      ctx.refreshMs = ms;
    },
    act: async (work) => {
      try {
        await work();
        showError(null);
      } catch (error) {
        if (error instanceof ApiError && error.status === 401) return toLogin(error);
        showError(error);
      }
      return render(true);
    },
  };
  const toLogin = (error) => {
    // A key that was sent and refused: say why (the API's message); none sent: just ask.
    if (apiKey()) showError(error);
    else showError(null);
    setApiKey("");
    logout.hidden = true;
    keepFocus(() => main.replaceChildren(login({ ...ctx, next: location.hash })));
  };
  let node;
  try {
    const page = route.page === "login" ? login : pages[route.page];
    node = page ? await page(ctx) : h("p", {}, `No page ${route.page}.`);
    if (!refreshing) showError(null);
  } catch (error) {
    if (mine !== generation) return;
    if (error instanceof ApiError && error.status === 401) return toLogin(error);
    showError(error);
    node = refreshing ? null : h("p", { class: "muted" }, "This page could not be loaded.");
  }
  if (mine !== generation) return;
  if (node) keepFocus(() => main.replaceChildren(node));
  if (!refreshing) main.focus({ preventScroll: true });
  if (ctx.refreshMs) timer = setTimeout(() => render(true), ctx.refreshMs);
}

logout.addEventListener("click", () => {
  setApiKey("");
  location.hash = "#/overview";
  render();
});
window.addEventListener("hashchange", () => render());
render();
