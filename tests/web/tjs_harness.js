// Runs tracker/web/static/t.js under node against a fake window/document, page load after page load.
// Usage: node tjs_harness.js path/to/t.js  -> exits 0 and prints "ok N scenarios", or throws.
'use strict';
const assert = require('node:assert/strict');
const fs = require('node:fs');
const vm = require('node:vm');

const source = fs.readFileSync(process.argv[2], 'utf8');

// A browser profile: its cookie jar survives page loads, as a real one does.
function browser() {
  return { jar: new Map(), writes: [], posts: [] };
}

async function load(b, url, { param = null, shopify = false, fetchOk = true, trk = undefined } = {}) {
  const location = new URL(url);
  const document = {
    currentScript: { getAttribute: (name) => (name === 'data-param' ? param : null) },
    get cookie() {
      return [...b.jar].map(([k, v]) => `${k}=${v}`).join('; ');
    },
    set cookie(text) {
      b.writes.push(text);
      const [pair, ...attributes] = text.split(';').map((s) => s.trim());
      const eq = pair.indexOf('=');
      const maxAge = attributes.find((a) => a.startsWith('Max-Age='));
      if (maxAge && Number(maxAge.slice(8)) <= 0) b.jar.delete(pair.slice(0, eq));
      else b.jar.set(pair.slice(0, eq), pair.slice(eq + 1));
    },
  };
  const window = {
    location: { href: location.href, search: location.search, protocol: location.protocol },
    fetch: async (path, init) => {
      b.posts.push({ path, init });
      if (fetchOk && !b.jar.has('cart')) b.jar.set('cart', 'c1-7f3a9b2e');
      return { ok: fetchOk };
    },
  };
  if (shopify) window.Shopify = { shop: 'demo.myshopify.com' };
  if (trk) window.trk = trk;
  const context = { window, document, URLSearchParams, JSON, RegExp, encodeURIComponent, decodeURIComponent };
  vm.runInNewContext(source, context, { filename: 't.js' });
  await new Promise((resolve) => setImmediate(resolve)); // let the fetch settle
  return window;
}

const scenarios = {
  async 'https landing keeps the click id 90 days, SameSite=Lax, Secure'() {
    const b = browser();
    const w = await load(b, 'https://shop.example.com/p/shirt?utm_source=ig&click_id=Ab3dEf6hJk9mNp2Q');
    assert.equal(w.trk.clickId(), 'Ab3dEf6hJk9mNp2Q');
    assert.deepEqual(b.writes, ['trk_click_id=Ab3dEf6hJk9mNp2Q; Max-Age=7776000; Path=/; SameSite=Lax; Secure']);
    assert.equal(b.posts.length, 0, 'not a Shopify store: no cart request');
  },
  async 'plain http: no Secure attribute'() {
    const b = browser();
    await load(b, 'http://localhost:8080/?click_id=Local1');
    assert.deepEqual(b.writes, ['trk_click_id=Local1; Max-Age=7776000; Path=/; SameSite=Lax']);
  },
  async 'later pages without the parameter keep it; a new click replaces it'() {
    const b = browser();
    await load(b, 'https://shop.example.com/?click_id=First1');
    let w = await load(b, 'https://shop.example.com/cart');
    assert.equal(w.trk.clickId(), 'First1');
    assert.equal(b.writes.length, 1, 'nothing rewritten without a new click');
    w = await load(b, 'https://shop.example.com/?click_id=Second2');
    assert.equal(w.trk.clickId(), 'Second2');
  },
  async 'data-param names the campaign parameter'() {
    const b = browser();
    const w = await load(b, 'https://shop.example.com/?click_id=NotThis&cid=Zz9Yy8Xx', { param: 'cid' });
    assert.equal(w.trk.clickId(), 'Zz9Yy8Xx');
  },
  async 'no click id: null, nothing written'() {
    const b = browser();
    const w = await load(b, 'https://shop.example.com/?utm_source=ig', { shopify: true });
    assert.equal(w.trk.clickId(), null);
    assert.equal(b.writes.length + b.posts.length, 0);
  },
  async 'a garbled or hostile value is not stored'() {
    const b = browser();
    const w = await load(b, 'https://shop.example.com/?click_id=%3Cscript%3E%3B%20Domain%3Devil.com');
    assert.equal(w.trk.clickId(), null);
    assert.equal(b.writes.length, 0);
  },
  async 'an existing window.trk keeps its other members'() {
    const b = browser();
    const w = await load(b, 'https://shop.example.com/?click_id=Keep1', { trk: { q: [1] } });
    assert.deepEqual(w.trk.q, [1]);
    assert.equal(w.trk.clickId(), 'Keep1');
  },
  async 'Shopify: the cart attribute click_id, posted once per value'() {
    const b = browser();
    await load(b, 'https://demo.myshopify.com/?click_id=Shop1Click', { shopify: true });
    assert.equal(b.posts.length, 1);
    const [{ path, init }] = b.posts;
    assert.equal(path, '/cart/update.js');
    assert.equal(init.method, 'POST');
    assert.equal(init.credentials, 'same-origin');
    assert.equal(init.headers['Content-Type'], 'application/json');
    assert.deepEqual(JSON.parse(init.body), { attributes: { click_id: 'Shop1Click' } });
    await load(b, 'https://demo.myshopify.com/products/x', { shopify: true });
    await load(b, 'https://demo.myshopify.com/?click_id=Shop1Click', { shopify: true });
    assert.equal(b.posts.length, 1, 'same value, same cart: not posted again');
    await load(b, 'https://demo.myshopify.com/?click_id=Shop2Click', { shopify: true });
    assert.equal(b.posts.length, 2, 'a new click id is posted');
    assert.deepEqual(JSON.parse(b.posts[1].init.body), { attributes: { click_id: 'Shop2Click' } });
    b.jar.set('cart', 'c1-new-cart-after-checkout');
    await load(b, 'https://demo.myshopify.com/', { shopify: true });
    assert.equal(b.posts.length, 3, 'a new cart gets the attribute again');
  },
  async 'Shopify: a failed update is tried again on the next page'() {
    const b = browser();
    await load(b, 'https://demo.myshopify.com/?click_id=Retry1', { shopify: true, fetchOk: false });
    await load(b, 'https://demo.myshopify.com/', { shopify: true });
    assert.equal(b.posts.length, 2);
  },
};

(async () => {
  for (const [name, run] of Object.entries(scenarios)) {
    try {
      await run();
    } catch (error) {
      console.error(`FAILED: ${name}\n${error.stack}`);
      process.exit(1);
    }
  }
  console.log(`ok ${Object.keys(scenarios).length} scenarios`);
})();
