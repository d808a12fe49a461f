// Starts GraphiQL on the DictaMesh page (mesh/graphql/graphiql.py). A file of its own, not
// an inline script: the page's Content-Security-Policy runs only scripts the worker serves.
//
// The bearer token is typed into the bar above GraphiQL and kept in this tab's
// sessionStorage (never in the URL, never in localStorage, where GraphiQL keeps its tabs);
// every request the fetcher sends carries it as `Authorization: Bearer <token>`.
(function () {
  "use strict";

  var TOKEN_KEY = "dictamesh.graphiql.token";
  var endpoint = window.location.pathname;
  var form = document.getElementById("dictamesh-token");
  var input = document.getElementById("dictamesh-token-input");
  var state = document.getElementById("dictamesh-token-state");
  var root = ReactDOM.createRoot(document.getElementById("graphiql"));

  function load() {
    try {
      return window.sessionStorage.getItem(TOKEN_KEY) || "";
    } catch (e) {
      return ""; // storage refused (e.g. a privacy setting): the token lives in memory only
    }
  }

  function keep(token) {
    try {
      if (token) {
        window.sessionStorage.setItem(TOKEN_KEY, token);
      } else {
        window.sessionStorage.removeItem(TOKEN_KEY);
      }
    } catch (e) {
      // memory only, as above
    }
  }

  function say(text, refused) {
    state.textContent = text;
    state.className = refused ? "dictamesh-refused" : "";
  }

  // People paste the whole header value as often as the token alone.
  function clean(text) {
    return text.trim().replace(/^bearer\s+/i, "");
  }

  function fetcherFor(token) {
    return async function fetcher(params, options) {
      var typed = (options && options.headers) || {};
      var headers = { "Content-Type": "application/json", Accept: "application/json" };
      Object.keys(typed).forEach(function (name) {
        // The bar's token replaces one typed into GraphiQL's headers editor, whatever its case.
        if (!(token && name.toLowerCase() === "authorization")) {
          headers[name] = typed[name];
        }
      });
      if (token) {
        headers.Authorization = "Bearer " + token;
      }
      var response = await window.fetch(endpoint, {
        method: "POST",
        headers: headers,
        body: JSON.stringify(params),
        credentials: "omit",
        cache: "no-store",
      });
      var text = await response.text();
      var body;
      try {
        body = JSON.parse(text);
      } catch (e) {
        body = { errors: [{ message: "HTTP " + response.status + ": " + text.slice(0, 200) }] };
      }
      if (response.status === 401) {
        var why = body.errors && body.errors[0] ? body.errors[0].message : "unauthorized";
        say("401 " + why + ": paste a token from `mesh token` (or the one `mesh dev` printed)", true);
      }
      return body;
    };
  }

  function start(token) {
    say(token ? "token set (kept in this tab only)" : "no token: queries will be refused", !token);
    // The same GraphiQL, given a new fetcher (never remounted: it saves the editors to
    // localStorage a moment after each keystroke, and a remount would lose the last ones).
    root.render(
      React.createElement(GraphiQL, {
        // A new fetcher makes GraphiQL fetch the schema again, now with the token.
        fetcher: fetcherFor(token),
        defaultEditorToolsVisibility: true,
        shouldPersistHeaders: false,
      })
    );
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var token = clean(input.value);
    input.value = token;
    keep(token);
    start(token);
  });

  input.value = load();
  start(input.value);
})();
