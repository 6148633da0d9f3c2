// Draw a digit or a number; the server groups the strokes into digits, re-draws each as an MNIST digit
// and says what the network reads.
"use strict";

const MAX_PHOTO_BYTES = 12 * 1024 * 1024; // the server (digits/server.py) takes this in base64, in its JSON
const THROTTLE_MS = 120; // while drawing, at most one question to the server this often

const canvas = document.getElementById("canvas");
const paper = document.getElementById("drop");
const hint = document.getElementById("hint");
const photoInput = document.getElementById("photo");
const statusLine = document.getElementById("status");
const prediction = document.getElementById("prediction");
const confidence = document.getElementById("confidence");
const seen = document.getElementById("seen");
const bars = document.getElementById("bars");
const seenFigure = document.getElementById("seen-figure");
const single = document.getElementById("single");
const pieces = document.getElementById("pieces");
const pieceList = document.getElementById("piece-list");
const ctx = canvas.getContext("2d");

let strokes = []; // each a list of [x, y], in thousandths of the canvas' side (a resize keeps them)
const UNIT = 1000;
let photo = null; // {bitmap, base64} when a photo is shown instead of a drawing
let drawing = null; // the stroke under the pen, and the pointer drawing it
let version = 0; // bumped on every change: a reply for an older version is stale
let inFlight = false;
let timer = null;
let outlines = null; // the boxes of the digits read, when there are several: {boxes, photo scale or null}

// The ten bars, built once.
const rows = [];
for (let d = 0; d < 10; d++) {
  const li = document.createElement("li");
  li.innerHTML = `<span class="digit">${d}</span><span class="track"><span class="fill"></span></span>` +
    `<span class="value">–</span>`;
  bars.append(li);
  rows.push({ li, fill: li.querySelector(".fill"), value: li.querySelector(".value") });
}

function resizeCanvas() {
  const ratio = window.devicePixelRatio || 1;
  canvas.width = Math.round(canvas.clientWidth * ratio);
  canvas.height = Math.round(canvas.clientHeight * ratio);
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  redraw();
}

function redraw() {
  const size = canvas.clientWidth;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  hint.classList.toggle("hidden", strokes.length > 0 || photo !== null);
  if (photo) {
    const scale = Math.min(size / photo.bitmap.width, size / photo.bitmap.height);
    const w = photo.bitmap.width * scale, h = photo.bitmap.height * scale;
    ctx.drawImage(photo.bitmap, (size - w) / 2, (size - h) / 2, w, h);
    if (outlines) drawOutlines(scale * photo.bitmap.width / outlines.width, (size - w) / 2, (size - h) / 2, 0);
    return;
  }
  const k = size / UNIT;
  ctx.strokeStyle = "#1f2430";
  ctx.lineWidth = Math.max(6, size * 0.045);
  ctx.lineCap = ctx.lineJoin = "round";
  for (const stroke of strokes) {
    ctx.beginPath();
    ctx.moveTo(stroke[0][0] * k, stroke[0][1] * k);
    for (const [x, y] of stroke.slice(1)) ctx.lineTo(x * k, y * k);
    if (stroke.length === 1) ctx.lineTo(stroke[0][0] * k + 0.01, stroke[0][1] * k); // a dot
    ctx.stroke();
  }
  if (outlines) drawOutlines(k, 0, 0, ctx.lineWidth / 2 + 4);
}

// Where each digit read lies, when there are several: a light dashed box around it, its place above.
function drawOutlines(k, x0, y0, pad) {
  ctx.save();
  ctx.strokeStyle = "#93b4f5";
  ctx.fillStyle = "#1d4ed8";
  ctx.lineWidth = 1.5;
  ctx.setLineDash([5, 4]);
  ctx.font = "600 12px system-ui, sans-serif";
  outlines.boxes.forEach(([left, top, right, bottom], n) => {
    const x = x0 + left * k - pad, y = y0 + top * k - pad;
    ctx.strokeRect(x, y, (right - left) * k + 2 * pad, (bottom - top) * k + 2 * pad);
    ctx.fillText(String(n + 1), x + 2, Math.max(12, y - 4));
  });
  ctx.restore();
}

function pointOf(event) {
  const box = canvas.getBoundingClientRect();
  const k = UNIT / box.width;
  return [Math.round((event.clientX - box.left) * k * 10) / 10, Math.round((event.clientY - box.top) * k * 10) / 10];
}

canvas.addEventListener("pointerdown", (event) => {
  if (event.button !== 0 || drawing) return;
  if (photo) { photo = null; strokes = []; outlines = null; }
  event.preventDefault();
  canvas.setPointerCapture(event.pointerId);
  drawing = { id: event.pointerId, stroke: [pointOf(event)] };
  strokes.push(drawing.stroke);
  redraw();
  changed();
});

canvas.addEventListener("pointermove", (event) => {
  if (!drawing || event.pointerId !== drawing.id) return;
  // Coalesced events: the pen's full path, not only the points the screen had time to show.
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
  for (const e of events.length ? events : [event]) {
    const [x, y] = pointOf(e);
    const last = drawing.stroke[drawing.stroke.length - 1];
    if (Math.hypot(x - last[0], y - last[1]) >= (1.5 * UNIT) / canvas.clientWidth) drawing.stroke.push([x, y]);
  }
  redraw();
  changed();
});

function endStroke(event) {
  if (!drawing || event.pointerId !== drawing.id) return;
  drawing = null;
  changed();
}
canvas.addEventListener("pointerup", endStroke);
canvas.addEventListener("pointercancel", endStroke);

function clearAll() {
  strokes = [];
  photo = null;
  drawing = null;
  outlines = null;
  version++;
  clearTimeout(timer);
  timer = null;
  redraw();
  setStatus("");
  showResult(null);
}
document.getElementById("clear").addEventListener("click", clearAll);
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape") clearAll();
});

// Something changed: ask the server soon, with whatever the drawing is by then.
function changed() {
  version++;
  prediction.dataset.state = "busy";
  if (timer === null) {
    timer = setTimeout(() => { timer = null; ask(); }, THROTTLE_MS);
  }
}

async function ask() {
  if (inFlight) return; // the reply in flight asks again when it lands
  const asked = version;
  const body = photo ? { image: photo.base64 } : { strokes };
  if (!photo && strokes.length === 0) return;
  inFlight = true;
  try {
    const response = await fetch("predict", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const reply = await response.json();
    if (asked === version) {
      if (response.ok) {
        showResult(reply);
        setStatus(photo ? "Read from the photo." : "");
      } else {
        showError(reply.error || `The server answered ${response.status}.`);
      }
    }
  } catch (error) {
    if (asked === version) showError("No answer from the server: is it still running?");
  } finally {
    inFlight = false;
    if (asked !== version && timer === null && (photo || strokes.length)) ask();
  }
}

function setStatus(text, isError = false) {
  statusLine.textContent = text;
  statusLine.classList.toggle("error", isError);
}

function showError(message) {
  showResult(null, "error");
  confidence.textContent = "No reading";
  setStatus(message, true);
}

// 28x28 grey levels (0-255) onto a 28x28 canvas.
function paint(canvasElement, image) {
  const context = canvasElement.getContext("2d");
  const pixels = context.createImageData(28, 28);
  image.flat().forEach((v, i) => {
    pixels.data.set([v, v, v, 255], 4 * i);
  });
  context.putImageData(pixels, 0, 0);
}

// A probability as shown: 100.0% only when it is exactly 1 (0.9996 is 99.9%, not the 100.0% rounding gives).
const percent = (p) => `${(100 * (p < 1 ? Math.min(p, 0.999) : p)).toFixed(1)}%`;

// Several digits: one compact card each, the 28x28 image the model saw, the digit and its ten probabilities.
function showPieces(digits) {
  pieceList.replaceChildren(...digits.map((read, n) => {
    const li = document.createElement("li");
    const p = read.probabilities;
    li.setAttribute("aria-label", `Digit ${n + 1}: ${read.digit}, ${percent(p[read.digit])} sure`);
    const image = document.createElement("canvas");
    image.width = image.height = 28;
    paint(image, read.image);
    const said = document.createElement("p");
    said.innerHTML = `<b>${read.digit}</b> <span>${percent(p[read.digit])}</span>`;
    const chart = document.createElement("div");
    chart.className = "mini";
    chart.setAttribute("aria-hidden", "true");
    p.forEach((q, d) => {
      const column = document.createElement("span");
      column.title = `${d}: ${percent(q)}`;
      column.classList.toggle("top", d === read.digit);
      column.innerHTML = `<b><i></i></b><small>${d}</small>`;
      column.querySelector("i").style.height = `${(100 * q).toFixed(1)}%`; // not an attribute: the page's policy refuses those
      chart.append(column);
    });
    li.append(image, said, chart);
    return li;
  }));
}

function showResult(reply, state = "empty") {
  const seenCtx = seen.getContext("2d");
  const several = Boolean(reply && reply.digits && reply.digits.length > 1);
  seenFigure.hidden = single.hidden = several;
  pieces.hidden = !several;
  outlines = several ? { boxes: reply.digits.map((d) => d.box), width: reply.size ? reply.size[0] : null } : null;
  redraw();
  if (!reply) {
    prediction.textContent = "?";
    prediction.dataset.state = state;
    prediction.dataset.size = "2";
    confidence.textContent = "Nothing drawn yet";
    seenCtx.clearRect(0, 0, 28, 28);
    for (const row of rows) {
      row.fill.style.width = "0";
      row.value.textContent = "–";
      row.li.classList.remove("top");
    }
    return;
  }
  // the CSS sizes a number by how many digits it has: up to 2, 3, 5, 8, 12 or 20
  prediction.dataset.size = String([2, 3, 5, 8, 12, 20].find((n) => reply.number.length <= n) || 20);
  if (several) {
    const least = Math.min(...reply.digits.map((d) => d.probabilities[d.digit]));
    prediction.textContent = reply.number;
    prediction.dataset.state = "ready";
    confidence.textContent = `${reply.digits.length} digits; the least sure ${percent(least)}`;
    showPieces(reply.digits);
    return;
  }
  const p = reply.probabilities;
  prediction.textContent = String(reply.digit);
  prediction.dataset.state = "ready";
  confidence.textContent = reply.unsure  // why it may be wrong: letters, a scribble
    ? `Unsure: ${reply.unsure} (${percent(p[reply.digit])} for ${reply.digit})`
    : `${percent(p[reply.digit])} sure`;
  rows.forEach((row, d) => {
    row.fill.style.width = `${(100 * p[d]).toFixed(1)}%`;
    row.value.textContent = percent(p[d]);
    row.li.classList.toggle("top", d === reply.digit);
  });
  paint(seen, reply.image);
}

// Photos: from the file picker, or dropped on the drawing area.
async function usePhoto(file) {
  if (!file) return;
  if (file.size > MAX_PHOTO_BYTES) {
    clearAll();
    showError(`That file is ${(file.size / 1048576).toFixed(1)} MB; photos up to 12 MB are read.`);
    return;
  }
  let bitmap;
  try {
    bitmap = await createImageBitmap(file);
  } catch (error) {
    clearAll();
    showError(`${file.name} is not an image this page can show: choose a PNG or JPEG.`);
    return;
  }
  const dataUrl = await new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
  strokes = [];
  photo = { bitmap, base64: dataUrl.slice(dataUrl.indexOf(",") + 1) };
  redraw();
  setStatus(`Reading ${file.name}…`);
  changed();
}

photoInput.addEventListener("change", () => {
  usePhoto(photoInput.files[0]);
  photoInput.value = ""; // the same file again still counts as a change
});

for (const type of ["dragenter", "dragover"]) {
  paper.addEventListener(type, (event) => {
    event.preventDefault();
    paper.classList.add("dragging");
  });
}
paper.addEventListener("dragleave", () => paper.classList.remove("dragging"));
paper.addEventListener("drop", (event) => {
  event.preventDefault();
  paper.classList.remove("dragging");
  usePhoto(event.dataTransfer.files[0]);
});
// A photo dropped beside the drawing area would otherwise replace the page.
for (const type of ["dragover", "drop"]) document.addEventListener(type, (event) => event.preventDefault());

window.addEventListener("resize", resizeCanvas);
resizeCanvas();
showResult(null);
