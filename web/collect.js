// Collecting labelled digits (--draw --collect DIR): "Save as 0 ... 9" buttons under the reading.
// Shown only when the server says it collects (GET collection). It reads draw.js's drawing (`strokes`,
// `photo`) and calls its clearAll() after a save, so that the next digit starts on a clean page.
// Undo removes the file the last save wrote (POST undo with the name the server gave it), only that one.
// Under the buttons, how many more of each digit --adapt needs (the server's adapt_minimum), or that it has enough.
"use strict";

(() => {
  const box = document.getElementById("collect");
  const buttonRow = document.getElementById("save-buttons");
  const savedLine = document.getElementById("saved");
  const undoButton = document.getElementById("undo");
  const adaptNote = document.getElementById("adapt-note");
  const buttons = [];
  let adaptMinimum = 0;
  let saving = false;
  let lastSaved = null; // the name the server gave this page's last save, until it is undone

  function canUndo(name) {
    lastSaved = name;
    undoButton.hidden = name === null;
  }

  function say(text, isError = false) {
    savedLine.textContent = text;
    savedLine.classList.toggle("error", isError);
  }

  function showCounts(counts, justSaved = null) {
    buttons.forEach((button, d) => {
      const n = counts[String(d)] || 0;
      button.querySelector(".count").textContent = String(n);
      button.setAttribute("aria-label", `Save as ${d} (${n} saved)`);
      button.classList.toggle("just-saved", d === justSaved);
    });
    if (!adaptMinimum) return;
    const short = buttons.map((_, d) => [d, adaptMinimum - (counts[String(d)] || 0)]).filter(([, n]) => n > 0);
    adaptNote.classList.toggle("enough", short.length === 0);
    adaptNote.textContent = short.length === 0
      ? `Enough of every digit to adapt the model to your handwriting: stop the page, then run --adapt on this ` +
        `folder (more of each makes the measure surer).`
      : `To adapt the model to your handwriting (--adapt), save at least ${adaptMinimum} of each digit: ` +
        short.map(([d, n]) => `${n} more ${d}${n === 1 ? "" : "s"}`).join(", ") + ".";
  }

  async function save(digit) {
    if (saving) return;
    if (!photo && strokes.length === 0) {
      say("Draw a digit first, then save it under the digit it is.", true);
      return;
    }
    saving = true;
    const body = photo ? { image: photo.base64, digit } : { strokes, digit };
    try {
      const response = await fetch("save", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      const reply = await response.json();
      if (response.ok) {
        showCounts(reply.counts, digit);
        clearAll();
        const total = Object.values(reply.counts).reduce((a, b) => a + b, 0);
        say(`Saved as ${digit} (${reply.saved}). ${total} saved in all.`);
        canUndo(reply.saved);
      } else {
        say(reply.error || `The server answered ${response.status}.`, true);
      }
    } catch (error) {
      say("No answer from the server: is it still running?", true);
    } finally {
      saving = false;
    }
  }

  async function undo() {
    if (saving || lastSaved === null) return;
    saving = true;
    try {
      const response = await fetch("undo", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ saved: lastSaved }),
      });
      const reply = await response.json();
      if (response.ok) {
        showCounts(reply.counts);
        say(`Removed ${reply.removed}.`);
      } else {
        say(reply.error || `The server answered ${response.status}.`, true);
      }
      canUndo(null); // removed, or no longer there to remove: either way nothing is left to undo
    } catch (error) {
      say("No answer from the server: is it still running?", true);
    } finally {
      saving = false;
    }
  }

  async function start() {
    let reply;
    try {
      const response = await fetch("collection");
      reply = await response.json();
    } catch (error) {
      return;
    }
    if (!reply.collecting) return; // without --collect: no buttons, and nothing is ever saved
    for (let d = 0; d < 10; d++) {
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.digit = String(d);
      button.innerHTML = `${d}<span class="count">0</span>`;
      button.addEventListener("click", () => save(d));
      buttonRow.append(button);
      buttons.push(button);
    }
    adaptMinimum = reply.adapt_minimum || 0;
    showCounts(reply.counts);
    undoButton.addEventListener("click", undo);
    box.hidden = false;
    // A new drawing or photo: the last save's message and highlight belong to the one before.
    for (const type of ["pointerdown", "drop"]) {
      document.getElementById("drop").addEventListener(type, () => {
        say("");
        showCounts(Object.fromEntries(buttons.map((b, d) => [d, Number(b.querySelector(".count").textContent)])));
      });
    }
    document.addEventListener("keydown", (event) => {
      if (event.repeat || event.ctrlKey || event.metaKey || event.altKey) return;
      if (/^[0-9]$/.test(event.key)) {
        event.preventDefault();
        save(Number(event.key));
      }
    });
  }

  start();
})();
