"""The Space page's own styles and script (``launch(css=CSS, js=JS)``): what Gradio's components do not do by
themselves for a visitor (a readable queue line, the result in view on a phone, number boxes that stay in range, files
that are no image kept from the editors)."""

REFUSED = "-refused"  # an image editor's id + this: its hidden button, pressed when a file put on it is no image
RUN_ROW, RUN_BUTTON, RUN_STATUS = "run-row", "run-button", "run-status"  # a chain's Run/Stop row, Run, status line
RESULT_FIRST = "result-first"  # class of a column shown before its row's other columns on a phone
CSS = """
.picture img { padding-top: 2.2rem; }
@media (max-width: 640px) { .picture img { padding-top: 3.4rem; } }
.dark .picture, .dark .picture .image-container { background: transparent; }
.black-canvas canvas { background: #000; }
.picture [data-testid="block-label"] { max-width: calc(100% - 4.5rem); white-space: normal; height: auto; }
.small-picture [data-testid="block-label"], .picture:not(:has(img)) [data-testid="block-label"] { max-width: 100%; }
.small-picture [data-testid="block-label"] > span { display: none; }  /* the icon: room for the words */
.small-picture img { width: 100%; aspect-ratio: 1; object-fit: contain; }  /* sized before it loads (lazily) */
.katex-display { overflow-x: auto; overflow-y: hidden; }
/* the status line's own progress (waiting in the queue, an error) is a line of text in it, not a box over the grid */
.run-status > [data-testid="status-tracker"] {
  position: static !important; padding: 0 !important; background: none; align-items: flex-start;
}
.run-status > [data-testid="status-tracker"].hide, .run-status > [data-testid="status-tracker"] svg,
.run-status > [data-testid="status-tracker"] .error, .run-status > [data-testid="status-tracker"] .clear-status {
  display: none;
}
.run-status .progress-level, .run-status .progress-text:not(.queue-line) { display: none; }
.run-status .progress-text { position: static; transform: none; padding: 0; font-size: 0; }
.run-status .progress-text::before { content: attr(data-waiting); font-size: var(--text-md); font-family: var(--font); }
.gradio-container .main.app { padding-left: min(32px, 2.5vw) !important; padding-right: min(32px, 2.5vw) !important; }
footer > .divider:last-child { display: none; }  /* Gradio's dot before a settings link there is not */
@media (max-width: 640px) {
  .small-picture img { padding-top: 2.2rem; }
  .prose h1 { font-size: 1.45rem; }
  .result-first { order: -1; }
}
"""
JS = r"""
() => {
  // A file dropped on (or chosen in) an image editor of class checked-drop is decoded here first. One the browser
  // cannot read as an image is kept from the editor, which would fail with only a console error, and the editor's
  // hidden button (id + "-refused") is pressed, so that the app says why and clears the tab's earlier results.
  const readable = async files => {
    try { for (const file of files) (await createImageBitmap(file)).close(); return true; } catch { return false; }
  };
  const replayed = new WeakSet();
  const check = (event, files, replay) => {
    const editor = event.target.closest && event.target.closest('.checked-drop');
    if (!editor || replayed.has(event) || !files || !files.length) return;
    event.preventDefault();
    event.stopImmediatePropagation();
    readable([...files]).then(ok => {
      if (ok) { const again = replay(); replayed.add(again); event.target.dispatchEvent(again); return; }
      event.target.dispatchEvent(new DragEvent('dragleave', {bubbles: true}));
      if (event.target.type === 'file') event.target.value = '';
      document.getElementById(editor.id + '-refused')?.click();
    });
  };
  document.addEventListener('drop', event => {
    const copy = new DataTransfer();  // the event's own files are gone once it has been handled
    for (const file of event.dataTransfer?.files ?? []) copy.items.add(file);
    check(event, copy.files, () => new DragEvent('drop', {dataTransfer: copy, bubbles: true, cancelable: true}));
  }, true);
  document.addEventListener('change', event => {
    if (event.target.type === 'file') check(event, event.target.files, () => new Event('change', {bubbles: true}));
  }, true);

  // A slider's number box: a typed value beyond the range becomes its end at once (the slider would do so only when
  // the box is left, after the app had been sent the value), and an emptied box waits for a number.
  document.addEventListener('input', event => {
    const box = event.target;
    if (!box.matches || !box.matches('input[type=number][aria-label^="number input for "]')) return;
    if (box.value === '') { event.stopImmediatePropagation(); return; }
    const value = Number(box.value), low = Number(box.min), high = Number(box.max);
    if (box.max !== '' && value > high) box.value = high;
    else if (box.min !== '' && value < low) box.value = low;
  }, true);

  // A chain waiting for another visitor's: Gradio's "queue: 1/1 | 0.4/5.0s" on its status line, said in words
  // (shown instead of the line, which Gradio keeps rewriting); the line's other progress is the status text itself.
  const queued = /queue: (\d+)\//;
  const reword = line => {
    for (const text of line.querySelectorAll('.progress-text')) {
      const match = text.textContent.match(queued);
      text.classList.toggle('queue-line', Boolean(match));
      if (!match) continue;
      const ahead = Number(match[1]);
      const runs = ahead === 1 ? 'another run' : 'other runs';
      text.dataset.waiting = `waiting for ${runs} (${ahead} ahead)…`;
    }
  };
  new MutationObserver(mutations => {
    const lines = new Set();
    for (const mutation of mutations) {
      const element = mutation.target.nodeType === Node.TEXT_NODE ? mutation.target.parentElement : mutation.target;
      const line = element && element.closest('.run-status');
      if (line) lines.add(line);
    }
    lines.forEach(reword);
  }).observe(document.body, {subtree: true, childList: true, characterData: true});

  // On a narrow screen the result lies below the controls: a Run button brings its row, and the result under it,
  // to the top of the screen.
  document.addEventListener('click', event => {
    const run = event.target.closest && event.target.closest('.run-button');
    if (!run || run.disabled || window.innerWidth > 768) return;
    const row = run.closest('.run-row') || run;
    setTimeout(() => row.scrollIntoView({behavior: 'smooth', block: 'start'}), 50);
  }, true);
}
"""
