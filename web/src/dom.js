// A tiny DOM helper: h('button', {class: 'x', onclick}, 'text', child...).
export function h (tag, attrs = {}, ...children) {
  const element = document.createElement(tag)
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue
    if (key.startsWith('on') && typeof value === 'function') {
      element.addEventListener(key.slice(2), value)
    } else if (key === 'class') {
      element.className = value
    } else if (value === true) {
      element.setAttribute(key, '')
    } else {
      element.setAttribute(key, String(value))
    }
  }
  append(element, children)
  return element
}

function append (element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue
    element.append(child instanceof Node ? child : document.createTextNode(String(child)))
  }
}

/** Replace the children of `element`. */
export function fill (element, ...children) {
  element.replaceChildren()
  append(element, children)
  return element
}

/** A short, readable date-time in the user's locale. */
export function when (iso) {
  if (!iso) return ''
  return new Date(iso).toLocaleString(undefined, { dateStyle: 'short', timeStyle: 'short' })
}

/** A stable colour for a user id. */
export function colorOf (id) {
  let hash = 0
  for (const char of String(id)) hash = (hash * 31 + char.charCodeAt(0)) | 0
  return `hsl(${Math.abs(hash) % 360} 70% 27%)` // dark enough for white text (WCAG AA) at any hue
}

export function initials (name) {
  return String(name || '?').split(/\s+/).filter(Boolean).slice(0, 2).map((w) => w[0].toUpperCase()).join('')
}

/** Announce a message to screen readers and show it briefly. */
export function toast (message, kind = 'info') {
  const region = document.getElementById('toasts')
  if (!region) return
  const item = h('div', { class: `toast toast-${kind}`, role: kind === 'error' ? 'alert' : 'status' }, message)
  region.append(item)
  setTimeout(() => item.remove(), 5000)
}
