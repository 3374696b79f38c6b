// Cards the recommendations page re-renders after polling get the same "Not interested" form the
// server put on the first rendering: the form is cloned from a <template> carrying the CSRF token.
(function () {
  const tpl = document.getElementById("not-interested-template"), list = document.getElementById("recs");
  if (!tpl || !list) return;
  function equip() {
    list.querySelectorAll("li.card[data-product]").forEach(function (li) {
      if (li.querySelector("form.not-interested")) return;
      const form = tpl.content.firstElementChild.cloneNode(true);
      form.action = "/p/" + encodeURIComponent(li.dataset.product) + "/not-interested/";
      li.append(form);
    });
  }
  new MutationObserver(equip).observe(list, {childList: true});
  equip();
})();
