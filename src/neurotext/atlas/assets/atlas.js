/* neurotext atlas: the searchable, sortable neuron table of index.html.
 *
 * The rows come from data/neurons.js (window.NEUROTEXT_ATLAS = {columns, rows}), loaded asynchronously
 * after the page has rendered, and the table shows one page of rows at a time, so the index stays fast
 * for whole-model sweeps. Tokens arrive as they are shown (decoded, whitespace visible: see
 * neurotext.model.tokens). Token strings are untrusted: they are only ever set with textContent.
 * A store with corpus examples adds the real-text columns (corpus max, share above 0, the max tokens of the
 * top contexts and a snippet of the best one); a store of examples only has those columns alone. A store with both
 * adds the read-out scores on held-out text (numbers only), each shown with its chance level in grey.
 * A store with dictionary features (L3.ffn.f12, site ffn.f) adds a sortable site column and a filter that lists
 * neurons, features or both.
 */
(function () {
  "use strict";

  var state = { rows: [], view: [], sort: "neuron", dir: 1, page: 0, per: 100, q: "", where: "both", partial: false,
                units: "all", noun: "neurons" };
  var UNITS = ["all", "neurons", "features"]; // the units filter (a store with dictionary features)
  var WHERE = []; // the search targets the page offers (the select's options); the first is the default
  var SHOWN_TOKENS = 3; // tokens shown per list in a row (the search covers all of them)
  var COLUMNS = [
    { key: "neuron", label: "neuron", title: "canonical name; opens the neuron's page" },
    { key: "activation", label: "activation", num: true, title: "activation of the FT vector" },
    { key: "best_activation", label: "best token", num: true, title: "highest activation of any real token" },
    { key: "ratio", label: "FT / best", num: true, title: "FT activation / best real-token activation" },
    { key: "nearest_cosine", label: "nearest cos", num: true, fixed: 3,
      title: "cosine between the FT vector and its nearest token" },
    { key: "retention", label: "retention", num: true, fixed: 3, title: "nearest-token activation / FT activation" },
    { key: "overlap_at_10", label: "overlap@10", num: true, fixed: 1,
      title: "share of the 10 nearest tokens among the 10 best" },
    { key: "stability_jaccard", label: "restarts J@10", num: true, fixed: 2,
      title: "stability: mean pairwise Jaccard of the restarts' 10 nearest tokens (1 = they agree)" },
    { key: "stability_cosine", label: "restarts cos", num: true, fixed: 2,
      title: "stability: mean pairwise cosine of the restarts' FT vectors" },
    { key: "consensus_tokens", label: "consensus of restarts",
      title: "tokens in the top-10 of at least half of the restarts; marked when the restarts disagree" },
    { key: "nearest_tokens", label: "FT nearest tokens (best restart)",
      title: "tokens nearest to the best restart's FT vector (cosine): one optimum among several" },
    { key: "best_tokens", label: "best real tokens", title: "best tokens of the exhaustive vocabulary scan" }
  ];
  // shown when the sweep stored real phrases (neurotext sweep --phrases; the index's atlas-meta says so)
  var PHRASE_COLUMNS = [
    { key: "phrase_activation", label: "phrase act.", num: true,
      title: "activation of the best real phrase (the best over the phrase lengths searched)" },
    { key: "phrase_tokens", label: "best real phrase", title: "tokens of the best real phrase, in order" }
  ];
  // shown when the store holds corpus examples (neurotext examples --out DIR; the index's atlas-meta says so)
  var CORPUS_COLUMNS = [
    { key: "corpus_max", label: "corpus max", num: true,
      title: "real text: the highest activation at any text position of the corpus" },
    { key: "corpus_share", label: "above 0", num: true, pct: true,
      title: "real text: share of the corpus's text positions where the activation is > 0" },
    { key: "corpus_tokens", label: "max tokens in real text",
      title: "the token at the max of each top context in the corpus (distinct, best context first)" },
    { key: "corpus_context", label: "top context", title: "the best context in the corpus, around its max token" }
  ];
  // shown when the read-outs were scored on real text (a sweep and corpus examples; the index's atlas-meta says so);
  // chance: the column holding each value's chance level, shown in grey beside it
  var SCORE_COLUMNS = [
    { key: "score_lookup", chance: "score_lookup_chance", label: "lookup r", num: true, fixed: 3,
      title: "real text: correlation with the activation on held-out text of the corpus lookup table (the 10 " +
        "tokens of highest mean activation on the train part): the reference from real text; grey: chance, the " +
        "same read-out of another neuron of the layer" },
    { key: "score_ft_nearest", chance: "score_ft_nearest_chance", label: "FT nearest r", num: true, fixed: 3,
      title: "real text: correlation with the activation on held-out text of the best restart's 10 FT nearest " +
        "tokens; grey: chance, the same read-out of another neuron of the layer" },
    { key: "score_ft_best", chance: "score_ft_best_chance", which: "score_ft_best_readout", label: "best FT r",
      num: true, fixed: 3,
      title: "real text: the highest correlation with the activation on held-out text of the FT read-outs " +
        "(nearest tokens, consensus, centroid tokens, and with the model's embeddings the FT and centroid " +
        "vectors; hover a value for which); grey: chance, the highest of the same read-outs of another neuron" },
    { key: "omega_squared", chance: "omega_squared_permuted", label: "token \u03c9\u00b2", num: true, fixed: 3,
      title: "real text: share of the activation's variance over every text position that the token there " +
        "explains (omega squared by token id; 1 = a word neuron); grey: the same with the token labels permuted" }
  ];
  // shown when the store holds dictionary features: ffn, out for neurons, ffn.f for the features of a dictionary on ffn
  var SITE_COLUMN = { key: "site", label: "site", text: true,
    title: "the unit's site: ffn, out for neurons; ffn.f for features of the dictionary on ffn (sorts neurons and " +
      "features apart)" };
  var LISTS = ["nearest_tokens", "best_tokens", "consensus_tokens", "phrase_tokens", "corpus_tokens", "corpus_context"];

  function $(id) { return document.getElementById(id); }

  // search key of a token or query: case, surrounding whitespace and a word-start or word-piece marker do not
  // matter (tokens arrive as shown, a leading space as \u2423; raw markers in a query are dropped too)
  function norm(t) { return String(t).trim().toLowerCase().replace(/^(##|\u0120|\u2581|\u2423)/, ""); }

  function fmt(v, fixed, pct) {
    // fixed: decimals for bounded statistics (cosine, retention, overlap); pct: a share as a percentage;
    // else 4 significant digits
    if (v === null || v === undefined || !isFinite(v)) return "n/a";
    if (pct) return (100 * v).toFixed(1) + "%";
    if (fixed !== undefined) return v.toFixed(fixed);
    var a = Math.abs(v);
    if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(2);
    return String(+v.toPrecision(4));
  }

  function load() {
    var s = document.createElement("script");
    s.src = "data/neurons.js";
    s.async = true;
    s.onload = function () {
      var data = window.NEUROTEXT_ATLAS;
      if (!data) { $("count").textContent = "data/neurons.js holds no atlas data"; return; }
      prepare(data);
    };
    s.onerror = function () { $("count").textContent = "could not load data/neurons.js"; };
    document.head.appendChild(s);
  }

  function prepare(data) {
    var c = {};
    data.columns.forEach(function (name, i) { c[name] = i; });
    function value(r, key) { return c[key] === undefined || r[c[key]] === undefined ? null : r[c[key]]; }
    function list(r, key) { return value(r, key) || []; }
    state.rows = data.rows.map(function (r, i) {
      var act = value(r, "activation"), best = value(r, "best_activation");
      return {
        order: i, neuron: r[c.neuron], lname: String(r[c.neuron]).toLowerCase(),
        site: value(r, "site"), feature: /\.f$/.test(String(value(r, "site"))),
        activation: act, best_activation: best,
        ratio: act > 0 && best > 0 ? act / best : null,
        nearest_cosine: value(r, "nearest_cosine"), retention: value(r, "retention"),
        overlap_at_10: value(r, "overlap_at_10"),
        nearest_tokens: list(r, "nearest_tokens"), best_tokens: list(r, "best_tokens"),
        nnorm: list(r, "nearest_tokens").map(norm), bnorm: list(r, "best_tokens").map(norm),
        stability_jaccard: value(r, "stability_jaccard"),
        stability_cosine: value(r, "stability_cosine"),
        reproducible: value(r, "reproducible"),
        consensus_tokens: list(r, "consensus_tokens"), cnorm: list(r, "consensus_tokens").map(norm),
        phrase_activation: value(r, "phrase_activation"),
        phrase_tokens: list(r, "phrase_tokens"), pnorm: list(r, "phrase_tokens").map(norm),
        corpus_max: value(r, "corpus_max"), corpus_share: value(r, "corpus_share"),
        corpus_tokens: list(r, "corpus_tokens"), xnorm: list(r, "corpus_tokens").map(norm),
        corpus_context: value(r, "corpus_context"),
        score_lookup: value(r, "score_lookup"), score_lookup_chance: value(r, "score_lookup_chance"),
        score_ft_nearest: value(r, "score_ft_nearest"), score_ft_nearest_chance: value(r, "score_ft_nearest_chance"),
        score_ft_best: value(r, "score_ft_best"), score_ft_best_chance: value(r, "score_ft_best_chance"),
        score_ft_best_readout: value(r, "score_ft_best_readout"),
        omega_squared: value(r, "omega_squared"), omega_squared_permuted: value(r, "omega_squared_permuted")
      };
    });
    readHash();
    update(true);
    window.__atlasReady = performance.now();
    document.documentElement.setAttribute("data-atlas-ready", "1");
  }

  // --- search: by neuron name (prefix) or by token (exact, or partial), in nearest and/or best tokens
  function position(list, q, partial) {
    for (var i = 0; i < list.length; i++) {
      if (partial ? list[i].indexOf(q) !== -1 : list[i] === q) return i;
    }
    return -1;
  }

  function match(row, q, qname) {
    // null (no match) or {rank, near, best}: positions of the token in each list (-1: absent); a neuron
    // named by the query ranks first (exact name -2, name prefix -1)
    var w = state.where;
    var near = w === "both" || w === "nearest" ? position(row.nnorm, q, state.partial) : -1;
    var best = w === "both" || w === "best" ? position(row.bnorm, q, state.partial) : -1;
    var cons = w === "both" || w === "consensus" ? position(row.cnorm, q, state.partial) : -1;
    var phrase = w === "both" || w === "phrase" ? position(row.pnorm, q, state.partial) : -1;
    var corpus = w === "corpus" ? position(row.xnorm, q, state.partial) : -1; // real text: its own target
    var named = null;
    if (qname) named = row.lname === qname ? -2 : (row.lname.indexOf(qname) === 0 ? -1 : null);
    if (named === null && near < 0 && best < 0 && cons < 0 && phrase < 0 && corpus < 0) return null;
    // rank: where the token stands; at equal positions consensus first, then FT nearest, then best tokens;
    // phrases last; in real text, the rank of the first top context that peaks at it
    var ranks = [cons >= 0 ? 3 * cons : Infinity, near >= 0 ? 3 * near + 1 : Infinity,
                 best >= 0 ? 3 * best + 2 : Infinity, phrase >= 0 ? 1000 : Infinity, corpus >= 0 ? corpus : Infinity];
    var rank = named !== null ? named : Math.min.apply(null, ranks);
    return { rank: rank, near: near, best: best, cons: cons, phrase: phrase, corpus: corpus };
  }

  function listed(r) {
    // the units filter: neurons, dictionary features or both
    return state.units === "all" || (state.units === "features") === r.feature;
  }

  function filter() {
    var q = norm(state.q.trim());
    if (!q) {
      state.view = state.rows.filter(listed);
      state.rows.forEach(function (r) { r.m = null; });
      return;
    }
    var raw = state.q.trim().toLowerCase();
    var qname = /^l\d/.test(raw) ? raw : null; // "L3", "L3.ffn.4", ...: also a neuron-name prefix
    state.view = [];
    state.rows.forEach(function (r) {
      r.m = listed(r) ? match(r, q, qname) : null;
      if (r.m) state.view.push(r);
    });
  }

  function sortView() {
    var key = state.sort, dir = state.dir;
    var searching = state.q.trim() !== "";
    state.view.sort(function (a, b) {
      if (key === "neuron") {
        if (searching && a.m && b.m && a.m.rank !== b.m.rank) return (a.m.rank - b.m.rank) * dir;
        return (a.order - b.order) * dir;
      }
      var x = a[key], y = b[key];
      if (key === "site") { // text: by site, then in store order
        return x === y ? a.order - b.order : (String(x) < String(y) ? -1 : 1) * dir;
      }
      var xn = x === null || x === undefined || !isFinite(x), yn = y === null || y === undefined || !isFinite(y);
      if (xn || yn) return xn === yn ? a.order - b.order : (xn ? 1 : -1); // missing values last
      return x === y ? a.order - b.order : (x < y ? -1 : 1) * dir;
    });
  }

  function update(resetPage) {
    filter();
    sortView();
    if (resetPage) state.page = 0;
    render();
  }

  // --- rendering (textContent only)
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function tokenChip(t, hit, rank) {
    var span = el("span", hit ? "tok hit" : "tok", t === "" ? "\u2205" : t);
    if (t === "") span.classList.add("empty");
    span.title = t + " (rank " + (rank + 1) + ")";
    return span;
  }

  function tokenCell(tokens, hitAt) {
    var td = el("td", "toks");
    var n = Math.min(SHOWN_TOKENS, tokens.length);
    for (var i = 0; i < n; i++) td.appendChild(tokenChip(tokens[i], i === hitAt, i));
    if (hitAt >= n) {
      td.appendChild(el("span", "more", "\u2026 #" + (hitAt + 1)));
      td.appendChild(tokenChip(tokens[hitAt], true, hitAt));
    }
    return td;
  }

  function snippetText(s) {
    // [left, max token, right] of the top context as one line: "left ⟦token⟧ right"
    return s ? s[0] + "\u27e6" + s[1] + "\u27e7" + s[2] : "";
  }

  function snippetCell(s) {
    var td = el("td", "snippet");
    if (!s) { td.appendChild(el("span", "muted", "n/a")); return td; }
    td.appendChild(document.createTextNode(s[0]));
    td.appendChild(el("b", "", s[1]));
    td.appendChild(document.createTextNode(s[2]));
    td.title = snippetText(s);
    return td;
  }

  function phraseCell(tokens, hitAt) {
    // a phrase is read in order: every token is shown
    var td = el("td", "toks phrase");
    for (var i = 0; i < tokens.length; i++) td.appendChild(tokenChip(tokens[i], i === hitAt, i));
    return td;
  }

  function numCell(r, col) {
    var td = el("td", "num", fmt(r[col.key], col.fixed, col.pct));
    if (col.chance && r[col.key] !== null) { // the value's chance level beside it, in grey
      td.appendChild(el("span", "chance", fmt(r[col.chance], col.fixed)));
      var which = col.which && r[col.which] !== null ? state.ftReadouts[r[col.which]] : null;
      td.title = (which ? which + "; " : "") + "chance " + fmt(r[col.chance], col.fixed);
    }
    return td;
  }

  function renderHead() {
    var tr = document.querySelector("#table thead tr");
    COLUMNS.forEach(function (col) {
      var th = el("th", col.num ? "num" : "");
      th.title = col.title;
      if (LISTS.indexOf(col.key) >= 0) {
        th.textContent = col.label;
      } else {
        var b = el("button", "sort", col.label);
        b.type = "button";
        b.setAttribute("data-key", col.key);
        b.addEventListener("click", function () {
          if (state.sort === col.key) state.dir = -state.dir;
          else { state.sort = col.key; state.dir = col.num ? -1 : 1; }
          update(true);
        });
        th.appendChild(b);
      }
      th.setAttribute("data-key", col.key);
      tr.appendChild(th);
    });
  }

  function render() {
    var total = state.view.length, per = state.per;
    var pages = Math.max(1, Math.ceil(total / per));
    state.page = Math.min(state.page, pages - 1);
    var start = state.page * per, rows = state.view.slice(start, start + per);
    var frag = document.createDocumentFragment();
    rows.forEach(function (r) {
      var tr = el("tr", r.feature ? "feature" : "");
      var td = el("td", "name");
      var a = el("a", "", r.neuron);
      a.href = "neurons/" + encodeURIComponent(r.neuron) + ".html";
      td.appendChild(a);
      tr.appendChild(td);
      COLUMNS.forEach(function (col) { // cells in the header's order
        if (col.num) { tr.appendChild(numCell(r, col)); return; }
        if (col.key === "site") { tr.appendChild(el("td", "site", r.site === null ? "" : r.site)); return; }
        if (col.key === "consensus_tokens") {
          var ctd = tokenCell(r.consensus_tokens, r.m ? r.m.cons : -1);
          if (r.reproducible === false) {
            var mark = el("span", "chip-unstable", "restarts disagree");
            mark.title = "the restarts' nearest tokens overlap no more than optima of unrelated neurons " +
              "(or share no token)";
            ctd.appendChild(mark);
            tr.classList.add("unstable");
          }
          tr.appendChild(ctd);
        } else if (col.key === "nearest_tokens") {
          tr.appendChild(tokenCell(r.nearest_tokens, r.m ? r.m.near : -1));
        } else if (col.key === "best_tokens") {
          tr.appendChild(tokenCell(r.best_tokens, r.m ? r.m.best : -1));
        } else if (col.key === "phrase_tokens") {
          tr.appendChild(phraseCell(r.phrase_tokens, r.m ? r.m.phrase : -1));
        } else if (col.key === "corpus_tokens") {
          var xtd = tokenCell(r.corpus_tokens, r.m ? r.m.corpus : -1);
          var first = xtd.querySelector(".tok");
          if (first && r.corpus_context) first.title += "; top context: " + snippetText(r.corpus_context);
          tr.appendChild(xtd);
        } else if (col.key === "corpus_context") {
          tr.appendChild(snippetCell(r.corpus_context));
        }
      });
      frag.appendChild(tr);
    });
    document.querySelector("#table tbody").replaceChildren(frag);
    document.querySelectorAll("#table thead th").forEach(function (th) {
      var k = th.getAttribute("data-key");
      if (k === state.sort) th.setAttribute("aria-sort", state.dir > 0 ? "ascending" : "descending");
      else th.removeAttribute("aria-sort");
    });
    var q = state.q.trim();
    var shown = state.units === "all" ? state.rows.length : state.rows.filter(listed).length;
    var noun = state.units === "all" ? state.noun : state.units;
    $("count").textContent = q
      ? total + " of " + shown + " " + noun + " match \u201c" + q + "\u201d"
      : shown + " " + noun;
    $("page").textContent = total ? (start + 1) + "\u2013" + (start + rows.length) + " of " + total
      + " \u00b7 page " + (state.page + 1) + " of " + pages : "no " + noun;
    $("prev").disabled = state.page === 0;
    $("next").disabled = state.page >= pages - 1;
    document.documentElement.setAttribute("data-atlas-query", state.q); // what the table now shows (tests wait on it)
  }

  // --- the URL hash keeps the search (#q=rain&in=nearest&partial=1), so searches can be linked to
  function readHash() {
    var p = new URLSearchParams(location.hash.replace(/^#/, ""));
    state.q = p.get("q") || "";
    state.where = WHERE.indexOf(p.get("in")) >= 0 ? p.get("in") : WHERE[0];
    state.partial = p.get("partial") === "1";
    state.units = $("units") && UNITS.indexOf(p.get("units")) >= 0 ? p.get("units") : "all";
    if ($("units")) $("units").value = state.units;
    $("q").value = state.q;
    $("where").value = state.where;
    $("partial").checked = state.partial;
    if (state.q && location.hash) $("neurons").scrollIntoView();
  }

  function writeHash() {
    var p = new URLSearchParams();
    if (state.q) p.set("q", state.q);
    if (state.where !== WHERE[0]) p.set("in", state.where);
    if (state.partial) p.set("partial", "1");
    if (state.units !== "all") p.set("units", state.units);
    var h = p.toString();
    history.replaceState(null, "", h ? "#" + h : location.pathname + location.search);
  }

  function init() {
    var meta = $("atlas-meta") ? JSON.parse($("atlas-meta").textContent) : {};
    state.phrases = !!meta.phrases;
    if (meta.sweep === false) COLUMNS = COLUMNS.slice(0, 1); // corpus examples only: no FT columns
    if (meta.features) { // neurons and dictionary features: a site column after the name
      COLUMNS = [COLUMNS[0], SITE_COLUMN].concat(COLUMNS.slice(1));
      state.noun = "units";
    }
    if (state.phrases) COLUMNS = COLUMNS.concat(PHRASE_COLUMNS);
    if (meta.examples) COLUMNS = COLUMNS.concat(CORPUS_COLUMNS);
    if (meta.scores) COLUMNS = COLUMNS.concat(SCORE_COLUMNS);
    state.ftReadouts = meta.ft_readouts || [];
    WHERE = Array.prototype.map.call($("where").options, function (o) { return o.value; });
    state.where = WHERE[0];
    renderHead();
    var timer = null;
    $("q").addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(function () { state.q = $("q").value; writeHash(); update(true); }, 80);
    });
    $("where").addEventListener("change", function () { state.where = $("where").value; writeHash(); update(true); });
    $("partial").addEventListener("change", function () { state.partial = $("partial").checked; writeHash(); update(true); });
    if ($("units")) {
      $("units").addEventListener("change", function () { state.units = $("units").value; writeHash(); update(true); });
    }
    $("per").addEventListener("change", function () { state.per = +$("per").value; update(true); });
    $("prev").addEventListener("click", function () { state.page--; render(); });
    $("next").addEventListener("click", function () { state.page++; render(); });
    window.addEventListener("hashchange", function () { if (state.rows.length) { readHash(); update(true); } });
    load();
  }

  init();
})();
