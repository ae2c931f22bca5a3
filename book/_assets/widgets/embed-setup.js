// Loaded after require.js and before embed-amd.js (html_js_files in _config.yml), on every page.
(function () {
  // The html-manager's bundles load their Font Awesome files from the folder of their own AMD modules. Named
  // after npm paths, those folders would sit next to each page; map them all to fonts/ beside this script, where
  // the files are vendored (no module is fetched: embed-amd.js defines them all).
  const fonts = document.currentScript.src.replace(/[^/]*$/, "fonts");
  require.config({ paths: { "@jupyter-widgets": fonts, "@jupyter-widgets/html-manager/dist": fonts } });
  // The html-manager typesets widget labels through MathJax 2's queue (MathJax.Hub.Queue); the book loads
  // MathJax 3, which has no Hub. Once the deferred MathJax script has run, hand those jobs to MathJax 3.
  document.addEventListener("DOMContentLoaded", function () {
    const mj = window.MathJax;
    if (mj && mj.startup && !mj.Hub) {
      mj.Hub = { Queue: (job) => mj.startup.promise.then(() => mj.typesetPromise([job[2]])) };
    }
  });
})();
