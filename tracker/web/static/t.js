/* tracker click-id carrier (served as /t.js). <script src="https://TRACKER/t.js" data-param="click_id" async></script>
   Keeps the click id from the landing URL in the first-party cookie trk_click_id (90 days),
   exposes window.trk.clickId(), and on Shopify copies it to the cart attribute click_id,
   which reaches the order webhook as note_attributes. No dependencies. */
(function (w, d) {
  var NAME = 'trk_click_id', SYNCED = 'trk_cart', AGE = 90 * 86400;
  var ok = /^[A-Za-z0-9._~-]{1,256}$/;
  var me = d.currentScript;
  var param = (me && me.getAttribute('data-param')) || 'click_id';

  function get(name) {
    var m = d.cookie.match(new RegExp('(?:^|;\\s*)' + name + '=([^;]*)'));
    try { return m ? decodeURIComponent(m[1]) : null; } catch (e) { return null; }
  }
  function set(name, value) {
    d.cookie = name + '=' + encodeURIComponent(value) + '; Max-Age=' + AGE + '; Path=/; SameSite=Lax' +
      (w.location.protocol === 'https:' ? '; Secure' : '');
  }
  function clickId() {
    var v = get(NAME);
    return v && ok.test(v) ? v : null;
  }

  try {
    var fresh = new URLSearchParams(w.location.search).get(param);
    if (fresh && ok.test(fresh)) set(NAME, fresh); // the latest click wins
  } catch (e) { /* no URLSearchParams: keep what the cookie has */ }

  var trk = w.trk = w.trk || {};
  trk.clickId = clickId;

  // Shopify: once per click id and cart (a new cart after checkout gets it again).
  var id = clickId();
  if (id && w.Shopify && w.fetch && get(SYNCED) !== id + '|' + (get('cart') || '')) {
    w.fetch('/cart/update.js', {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ attributes: { click_id: id } })
    }).then(function (r) {
      if (r.ok) set(SYNCED, id + '|' + (get('cart') || ''));
    }, function () { /* offline: the next page tries again */ });
  }
})(window, document);
