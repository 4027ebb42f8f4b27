// The compare page: uploads each chosen image once per chosen model through POST /api/enhance and
// lays out input, bicubic and every model's output with NIMA scores, timings and a slider.
'use strict';

const $ = (selector, root = document) => root.querySelector(selector);
let files = [];

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') node.className = v;
    else if (k === 'text') node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child);
  return node;
}

function selectedModels() {
  return [...document.querySelectorAll('#models input:checked')].map((box) => box.value);
}

function updateButton() {
  $('#go').disabled = files.length === 0 || selectedModels().length === 0;
}

function chooseFiles(list) {
  files = [...list];
  $('#chosen').textContent = files.length ? files.map((f) => f.name).join(', ') : 'no image chosen';
  updateButton();
}

async function loadModels() {
  const box = $('#models');
  try {
    const response = await fetch('/api/models');
    const info = await response.json();
    box.replaceChildren(el('legend', {text: 'Models'}));
    for (const m of info.models) {
      const input = el('input', {type: 'checkbox', value: m.name, checked: ''});
      input.addEventListener('change', updateButton);
      box.append(el('label', {title: m.source}, input, ` ${m.name} ×${m.scale}`));
    }
    $('#limits').textContent = `Up to ${info.max_pixels.toLocaleString()} pixels and ` +
        `${Math.round(info.max_upload_bytes / 2 ** 20)} MB per image.` +
        (info.nima ? '' : ' No NIMA was given to the server, so no NIMA scores are shown.') +
        (info.niqe ? ' NIQE: lower is more natural; an image needs two 96×96 blocks (e.g. 96×192) for one.' : '');
  } catch (e) {
    box.replaceChildren(el('legend', {text: 'Models'}), el('p', {class: 'error', text: `cannot list the models (${e})`}));
  }
  updateButton();
}

function fmt(value, digits) {
  return value === null || value === undefined ? '–' : Number(value).toFixed(digits);
}

function zipHref(list) {
  return '/api/zip?' + list.map((f) => 'file=' + encodeURIComponent(f)).join('&');
}

function resultFile(url) {  // '/results/ID/NAME.png' -> 'ID/NAME.png'
  return url.split('/').slice(-2).join('/');
}

function tile(entry, label) {
  const name = label.replace(/[^A-Za-z0-9._-]+/g, '_');
  const meta = [`${entry.width}×${entry.height}`];
  if (entry.seconds !== null && entry.seconds !== undefined) meta.push(`${fmt(entry.seconds, 2)} s`);
  if (entry.psnr !== null && entry.psnr !== undefined) meta.push(`PSNR ${fmt(entry.psnr, 2)} dB, SSIM ${fmt(entry.ssim, 4)}`);
  const nima = entry.nima === null || entry.nima === undefined ? 'NIMA –'
      : `NIMA ${fmt(entry.nima, 2)} ± ${fmt(entry.nima_std, 2)}`;
  const niqe = entry.niqe === null || entry.niqe === undefined ? 'NIQE –' : `NIQE ${fmt(entry.niqe, 2)}`;
  return el('div', {class: 'tile', 'data-name': label},
      el('a', {href: entry.url, target: '_blank', title: 'open full size'},
         el('img', {src: entry.url, alt: label, 'data-width': entry.width, 'data-height': entry.height})),
      el('div', {class: 'name', text: label}),
      el('div', {class: 'meta', text: meta.join(' · ')}),
      el('div', {class: 'nima', text: nima}),
      el('div', {class: 'niqe', title: 'NIQE: no reference, lower is more natural', text: niqe}),
      el('a', {class: 'download', href: entry.url, download: `${name}.png`, text: 'download'}));
}

function slider(before, after, label) {
  const afterWrap = el('div', {class: 'after'}, el('img', {src: after.url, alt: label}));
  const line = el('div', {class: 'line'});
  const range = el('input', {type: 'range', min: '0', max: '100', value: '50', 'aria-label': `${before.model} vs ${label}`});
  range.addEventListener('input', () => {
    afterWrap.style.clipPath = `inset(0 0 0 ${range.value}%)`;
    line.style.left = `${range.value}%`;
  });
  return el('div', {class: 'compare', 'data-model': label},
      el('div', {class: 'slider-title', text: `${before.model} ⟷ ${label}`}),
      el('div', {style: 'position: relative'}, el('img', {src: before.url, alt: before.model}), afterWrap, line),
      range,
      el('div', {class: 'labels'}, el('span', {text: before.model}), el('span', {text: label})));
}

function newCard(file) {
  const card = el('article', {class: 'card'});
  card.files = [];
  card.zip = el('a', {class: 'button secondary', download: 'enhanced.zip', hidden: '', text: 'download all (zip)'});
  card.size = el('small', {text: `${Math.ceil(file.size / 1024)} KB`});
  card.append(el('h2', {}, el('span', {text: file.name}), card.size, card.zip),
              el('div', {class: 'errors'}), el('div', {class: 'tiles'}), el('div', {class: 'sliders'}));
  $('#results').append(card);
  return card;
}

function addResult(card, body) {
  const tiles = $('.tiles', card);
  const remember = (url) => { const f = resultFile(url); if (!card.files.includes(f)) card.files.push(f); };
  if (!$('[data-name="input"]', tiles)) {
    tiles.append(tile(body.input, 'input'));
    card.size.textContent = `${body.input.width}×${body.input.height}`;
    remember(body.input.url);
  }
  for (const r of body.results) {
    if (r.baseline && $(`[data-name="${CSS.escape(r.model)}"]`, tiles)) continue;
    tiles.append(tile(r, r.model));
    remember(r.url);
    if (!r.baseline) {
      const base = body.results.find((b) => b.baseline && b.scale === r.scale);
      if (base) $('.sliders', card).append(slider(base, r, r.model));
    }
  }
  card.zip.href = zipHref(card.files);
  card.zip.hidden = false;
}

async function run() {
  const chosen = selectedModels();
  const test = $('#test').checked;
  const total = files.length * chosen.length;
  let done = 0;
  const all = [];
  const progress = $('#progress');
  const say = (text) => { $('#progress-text').textContent = text; };
  progress.max = total;
  progress.value = 0;
  $('#status').hidden = false;
  $('#go').disabled = true;
  $('#zip-all').hidden = true;
  $('#results').replaceChildren();
  for (const file of files) {
    const card = newCard(file);
    for (const [i, name] of chosen.entries()) {
      say(`${done} / ${total}: ${file.name} with ${name}…`);
      const form = new FormData();
      form.append('image', file);
      form.append('model', name);
      form.append('test', test ? 'true' : 'false');
      let failed = null;
      try {
        const response = await fetch('/api/enhance', {method: 'POST', body: form});
        const body = await response.json().catch(() => ({error: `HTTP ${response.status}`}));
        if (response.ok) addResult(card, body);
        else failed = body.error || `HTTP ${response.status}`;
      } catch (e) {
        failed = `the server did not answer (${e})`;
      }
      if (failed) {
        $('.errors', card).append(el('p', {class: 'error', text: failed}));
        done += chosen.length - i;  // the other models would refuse the same file
        progress.value = done;
        break;
      }
      done += 1;
      progress.value = done;
    }
    all.push(...card.files);
  }
  say(`done: ${files.length} image(s), ${chosen.length} model(s)`);
  $('#status').dataset.done = 'true';
  if (all.length) {
    $('#zip-all').href = zipHref(all);
    $('#zip-all').hidden = false;
  }
  updateButton();
}

function init() {
  const drop = $('#drop');
  $('#files').addEventListener('change', (e) => chooseFiles(e.target.files));
  drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    chooseFiles(e.dataTransfer.files);
  });
  $('#go').addEventListener('click', () => { $('#status').dataset.done = ''; run(); });
  loadModels();
}

init();
