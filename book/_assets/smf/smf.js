// The book's page behaviour (loaded on every page by _config.yml).
//
// 1. A figure shown narrower than its full size opens full size, in a scrollable layer, when tapped or clicked;
// a second tap closes it. Each figure carries its full width in its width attribute (smf_lib.views.figures).
(function () {
  function zoom(img) {
    const full = Number(img.getAttribute('width'));
    if (!full || img.getBoundingClientRect().width >= full - 1) return;  // already shown full size
    const layer = document.createElement('div');
    layer.className = 'smf-zoom';
    layer.setAttribute('role', 'dialog');
    layer.setAttribute('aria-label', (img.getAttribute('alt') || 'figure') + ', full size (tap to close)');
    const big = img.cloneNode();
    big.removeAttribute('style');
    big.style.width = full + 'px';
    layer.appendChild(big);
    layer.addEventListener('click', () => layer.remove());
    document.body.appendChild(layer);
  }
  document.addEventListener('click', (e) => {
    const img = e.target.closest && e.target.closest('img.smf-figure');
    if (img && !img.closest('.smf-zoom')) zoom(img);
  });
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape') document.querySelectorAll('.smf-zoom').forEach((l) => l.remove());
  });
  // 2. A table wider than its column scrolls sideways inside its own box and says so above it.
  function scrollBox(table) {
    let box = table.parentElement;
    while (box && box.tagName !== 'ARTICLE' && !/(auto|scroll)/.test(getComputedStyle(box).overflowX)) {
      box = box.parentElement;
    }
    if (!box || box.tagName === 'ARTICLE') {  // no box of its own: give it one
      box = document.createElement('div');
      box.style.overflowX = 'auto';
      table.replaceWith(box);
      box.appendChild(table);
    }
    return box;
  }
  function markWideTables() {
    document.querySelectorAll('article table').forEach((table) => {
      if (!table.getClientRects().length || table.closest('.smf-narrow')) return;  // hidden views
      const box = scrollBox(table);
      const wide = table.getBoundingClientRect().width > box.clientWidth + 2;
      const note = box.previousElementSibling && box.previousElementSibling.classList.contains('smf-scroll-note')
        ? box.previousElementSibling : null;
      box.classList.toggle('smf-scroll', wide);
      if (wide && !note) {
        const n = document.createElement('div');
        n.className = 'smf-scroll-note';
        n.textContent = 'This table is wider than the page: scroll it sideways to see every column →';
        box.insertAdjacentElement('beforebegin', n);
      } else if (!wide && note) {
        note.remove();
      }
    });
  }
  window.addEventListener('resize', markWideTables);
  window.addEventListener('load', markWideTables);
  document.addEventListener('DOMContentLoaded', () => {
    document.querySelectorAll('article img.smf-figure').forEach((img) => {
      const hint = document.createElement('div');
      hint.className = 'smf-zoom-hint';
      hint.textContent = 'Tap the figure to see it full size.';
      img.insertAdjacentElement('afterend', hint);
    });
  });
})();
