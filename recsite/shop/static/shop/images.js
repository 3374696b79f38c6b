// Product images come from the data's URLs (Amazon's servers), which may be gone or unreachable
// (the tests run offline). Any <img data-placeholder> that fails to load shows the local
// placeholder instead. One capturing listener (image errors do not bubble), loaded in <head>
// before any image, rather than inline onerror attributes, so a Content-Security-Policy without
// 'unsafe-inline' still allows it.
(function () {
  function fallBack(img) {
    const placeholder = img.dataset.placeholder;
    if (placeholder && img.getAttribute("src") !== placeholder) {
      img.src = placeholder;
      img.classList.add("placeholder");
    }
  }
  document.addEventListener("error", function (e) {
    if (e.target instanceof HTMLImageElement) fallBack(e.target);
  }, true);
  // an image that failed before this ran (e.g. from the browser's cache of a failure)
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("img[data-placeholder]").forEach(function (img) {
      if (img.complete && img.naturalWidth === 0 && img.getAttribute("src")) fallBack(img);
    });
  });
  window.productImageFallback = fallBack;
})();
