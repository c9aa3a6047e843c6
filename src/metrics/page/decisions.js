'use strict';
// Every value from /decisions is set as text (textContent, value), never parsed as markup.
const OUTCOMES = [
  ['deny', 'Denied'],
  ['would_deny', 'Would be denied (let through by a report scope)'],
  ['allow', 'Allowed'],
];
const REFRESH_MS = 30000;

function cell(row, text, className) {
  const td = document.createElement('td');
  td.textContent = text;
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function heading(row, text) {
  const th = document.createElement('th');
  th.textContent = text;
  th.scope = 'col';
  row.appendChild(th);
}

function fallback(line) {
  const box = document.getElementById('fallback');
  const field = document.getElementById('fallback-line');
  field.value = line;
  box.hidden = false;
  field.focus();
  field.select();
}

function copy(line, button) {
  const done = () => {
    button.textContent = 'copied';
    setTimeout(() => { button.textContent = 'copy rule'; }, 1500);
  };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(line).then(done, () => fallback(line));
  } else {
    fallback(line);
  }
}

function subject(entry) {
  if (entry.name !== null) return entry.name;
  if (entry.destination !== null) return '(no name) ' + entry.destination;
  return '(no name)';
}

function table(key, title, entries) {
  const section = document.createElement('section');
  section.id = key;
  const h2 = document.createElement('h2');
  h2.textContent = title + ': ' + entries.length;
  section.appendChild(h2);
  if (entries.length === 0) {
    const p = document.createElement('p');
    p.className = 'empty';
    p.textContent = 'Nothing in the last hour.';
    section.appendChild(p);
    return section;
  }
  const t = document.createElement('table');
  const head = t.createTHead().insertRow();
  for (const h of ['name', 'count', 'sources', 'last seen', 'rule', '']) heading(head, h);
  const body = t.createTBody();
  for (const e of entries) {
    const row = body.insertRow();
    const name = subject(e);
    cell(row, name, 'name');
    cell(row, e.error > 0 ? e.count + ' (\u00b1' + e.error + ')' : String(e.count), 'number');
    cell(row, String(e.sources), 'number');
    cell(row, e.last_seen);
    cell(row, e.rule, 'rule');
    const action = cell(row, '');
    if (e.rule_line !== null) {
      const button = document.createElement('button');
      button.type = 'button';
      button.textContent = 'copy rule';
      button.title = e.rule_line;
      button.addEventListener('click', () => copy(e.rule_line, button));
      action.appendChild(button);
    }
    row.dataset.search = [name, e.rule, e.rule_line || ''].join(' ').toLowerCase();
  }
  section.appendChild(t);
  return section;
}

function applyFilter() {
  const query = document.getElementById('filter').value.trim().toLowerCase();
  for (const row of document.querySelectorAll('#outcomes tbody tr')) {
    row.hidden = query !== '' && !row.dataset.search.includes(query);
  }
}

async function load() {
  const status = document.getElementById('status');
  try {
    const response = await fetch('/decisions', { cache: 'no-store' });
    if (!response.ok) throw new Error('HTTP ' + response.status);
    const data = await response.json();
    const sections = OUTCOMES.map(([key, title]) => table(key, title, data[key]));
    document.getElementById('outcomes').replaceChildren(...sections);
    status.textContent = 'Since ' + data.since + ', as of ' + new Date().toISOString() + '.';
    applyFilter();
  } catch (error) {
    status.textContent = 'Could not load /decisions: ' + error.message;
  }
}

document.getElementById('filter').addEventListener('input', applyFilter);
document.getElementById('refresh').addEventListener('click', load);
setInterval(load, REFRESH_MS);
load();
