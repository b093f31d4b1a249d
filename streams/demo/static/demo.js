// The demo storefront: Segment's browser SDK (analytics-next, served by this server from
// the local cache) posting to this server's collector. Every call is a real browser event.
(function () {
  "use strict";
  const config = window.DEMO;
  const $ = (sel) => document.querySelector(sel);
  const PRODUCTS = [
    { id: "sku-runner", name: "Trail Runner", category: "shoes", price: 89 },
    { id: "sku-boot", name: "Hiking Boot", category: "shoes", price: 129 },
    { id: "sku-heel", name: "Evening Heel", category: "shoes", price: 99 },
    { id: "sku-cap", name: "Baseball Cap", category: "hats", price: 25 },
    { id: "sku-tophat", name: "Top Hat", category: "hats", price: 60 },
    { id: "sku-sunhat", name: "Sun Hat", category: "hats", price: 35 },
    { id: "sku-backpack", name: "Daypack", category: "bags", price: 70 },
    { id: "sku-handbag", name: "Handbag", category: "bags", price: 150 },
    { id: "sku-briefcase", name: "Briefcase", category: "bags", price: 180 },
  ];
  let analytics = null;

  function status(text) { $("#status").textContent = text || ""; }

  function product(p) { return { product_id: p.id, name: p.name, category: p.category,
                                 price: p.price, currency: "EUR" }; }

  function render(category) {
    const shown = PRODUCTS.filter((p) => !category || p.category === category);
    $("#products").replaceChildren(...shown.map((p) => {
      const card = document.createElement("div");
      card.className = "card";
      card.dataset.product = p.id;
      card.innerHTML = `<div class="art ${p.category}">${p.name[0]}</div><h3></h3>
        <div class="meta">${p.category} · €${p.price}</div>
        <button class="view" type="button">View</button>
        <button class="add" type="button">Add to cart</button>`;
      card.querySelector("h3").textContent = p.name;
      card.querySelector(".view").addEventListener("click", () => view(p));
      card.querySelector(".add").addEventListener("click", () => add(p));
      return card;
    }));
    document.querySelectorAll("#categories button").forEach((b) =>
      b.classList.toggle("active", b.dataset.category === category));
  }

  async function view(p) {
    const detail = $("#detail");
    detail.hidden = false;
    detail.textContent = `${p.name}: €${p.price}. Viewed (a "Product Viewed" event).`;
    await analytics.track("Product Viewed", product(p));
  }

  async function add(p) {
    $("#detail").hidden = false;
    $("#detail").textContent = `${p.name} is in your cart (a "Product Added" event).`;
    await analytics.track("Product Added", product(p));
  }

  // A stable user id for an email (FNV-1a): the shop's own account id, not the email.
  function userIdFor(email) {
    let h = 0x811c9dc5;
    for (const c of email) { h ^= c.codePointAt(0); h = Math.imul(h, 0x01000193) >>> 0; }
    return "shopper-" + h.toString(16).padStart(8, "0");
  }

  async function signIn(event) {
    event.preventDefault();
    const email = $("#email").value.trim().toLowerCase();
    const name = $("#name").value.trim();
    const company = $("#company").value.trim();
    if (!email) return;
    const userId = userIdFor(email);
    await analytics.identify(userId, { email, ...(name ? { name } : {}),
                                       consent: { email: true, web: true } });
    if (company) {
      await analytics.group(company.toLowerCase().replace(/[^a-z0-9]+/g, "-"),
                            { name: company });
    }
    await analytics.track("Signed In", { method: "password" });
    showAccount();
  }

  function showAccount() {
    const id = analytics.user().id();
    $("#signin").hidden = !!id;
    $("#signedin").hidden = !id;
    $("#who").textContent = (analytics.user().traits() || {}).email || id || "";
  }

  async function signOut() {
    await analytics.track("Signed Out");
    analytics.reset();  // a new anonymousId: the next visitor on this browser is someone else
    showAccount();
    $("#anon").textContent = analytics.user().anonymousId();
  }

  async function refreshVisitor() {
    const anon = analytics && analytics.user().anonymousId();
    if (!anon) return;
    $("#anon").textContent = anon;
    let doc = null;
    try {
      const resp = await fetch(`/demo/visitor.json?anonymousId=${encodeURIComponent(anon)}`);
      if (resp.ok) doc = await resp.json();
    } catch (e) { /* the server is restarting: try again on the next round */ }
    if (!doc) return;
    const link = document.createElement("a");
    link.id = "profile-link";
    link.href = `/people?identifier=${encodeURIComponent("anonymous_id:" + anon)}`;
    link.textContent = `profile ${doc.profileId}`;
    $("#profile").replaceChildren("Your ", link, ` (${doc.events} events`,
      doc.groups.length ? `, accounts: ${doc.groups.join(", ")})` : ")");
    $("#identifiers").replaceChildren(...doc.identifiers.map((i) => {
      const li = document.createElement("li");
      li.dataset.type = i.type;
      li.textContent = `${i.type}: ${i.value}`;
      return li;
    }));
    $("#messages tbody").replaceChildren(...doc.messages.map((m) => {
      const tr = document.createElement("tr");
      for (const v of [m.rule, m.channel || "", m.status, (m.sentAt || m.dueAt || "").slice(0, 19)]) {
        const td = document.createElement("td");
        td.textContent = v;
        tr.append(td);
      }
      return tr;
    }));
  }

  async function start() {
    if (!config.sdkReady || !window.AnalyticsNext) {
      status(`Segment's browser SDK (@segment/analytics-next ${config.sdkVersion}) is not in ` +
             "the local cache yet: `streams up` fetches it from npm.");
      return;
    }
    if (!config.writeKey) {
      status("No write key is bound to the web source: add one to STREAMS_WRITE_KEYS " +
             "(for example wk_web=web).");
      return;
    }
    const segment = { apiKey: config.writeKey, apiHost: `${location.host}/v1`,
                      protocol: location.protocol.replace(":", "") };
    // Offline: the settings Segment's CDN would serve are given here; the lazily loaded
    // chunks come from this server (cdnURL).
    [analytics] = await window.AnalyticsNext.AnalyticsBrowser.load(
      { writeKey: config.writeKey, cdnURL: `${location.origin}/demo/sdk`,
        cdnSettings: { integrations: { "Segment.io": segment } } },
      { integrations: { "Segment.io": segment } });
    window.shop = { analytics };
    render("");
    document.querySelectorAll("#categories button").forEach((b) =>
      b.addEventListener("click", async () => {
        render(b.dataset.category);
        await analytics.page("Shop", b.dataset.category || "All",
                             b.dataset.category ? { category: b.dataset.category } : {});
      }));
    $("#signin").addEventListener("submit", signIn);
    $("#signout").addEventListener("click", signOut);
    showAccount();
    await analytics.page("Shop", "Home");
    refreshVisitor();
    setInterval(refreshVisitor, 2000);
    document.body.dataset.ready = "true";
  }

  start().catch((e) => status(`The shop could not start: ${e}`));
})();
