-- evlua/profiler_svg.lua - a profile report as a flame graph: one SVG file,
-- no script, no external style. The root is at the bottom; each frame is a
-- rectangle as wide as its share of the samples, above its caller; its
-- <title> (the hover text of every browser) names the frame and its share.

local concat, format = table.concat, string.format

local svg = {}

local ROW = 16          -- px per stack level
local MARGIN = 10
local TOP = 40          -- the title's band
local CHAR = 6.5        -- px per character of the 11 px monospace labels

local function escape(s)
  return (s:gsub("[&<>\"]", { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;",
                              ['"'] = "&quot;" }))
end

-- A warm colour from the label (the same frame, the same colour); C
-- frames and markers in blue.
local function colour(label, is_c)
  local h = 0
  for i = 1, #label do h = (h * 31 + label:byte(i)) % 1000003 end
  if is_c then return format("rgb(%d,%d,%d)", 80 + h % 40, 140 + h % 50, 200 + h % 40) end
  return format("rgb(%d,%d,%d)", 205 + h % 50, 90 + h % 120, 40 + h % 50)
end

local function depth_of(r)
  local depth, max = { [0] = 0 }, 0
  for i = 1, #r.parent do
    depth[i] = depth[r.parent[i]] + 1
    if depth[i] > max and r.total[i] > 0 then max = depth[i] end
  end
  return depth, max
end

local function share_text(r, i, whole)
  local w = r.total[i]
  if r.mode == "calls" then
    return format("%.3f ms, %.2f%%", w / 1e6, w * 100 / whole)
  end
  return format("%d samples, %.2f%%", w, w * 100 / whole)
end

-- Lay the children of each node out left to right, from its own x.
local function layout(r)
  local x = { [0] = 0 }
  for node = 0, #r.parent do
    if x[node] then
      local left = x[node]
      for _, c in ipairs(r.kids[node]) do
        x[c] = left
        left = left + r.total[c]
      end
    end
  end
  return x
end

-- svg.render(report, { width = 1200, title = "..." }) -> the SVG text
function svg.render(r, opts)
  local width = opts.width or 1200
  local whole = r.total[0]
  local depth, max_depth = depth_of(r)
  local height = TOP + (max_depth + 1) * ROW + MARGIN
  local scale = whole > 0 and (width - 2 * MARGIN) / whole or 0
  local x = layout(r)
  local out = {
    '<?xml version="1.0" encoding="UTF-8"?>',
    format('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
           .. 'viewBox="0 0 %d %d" font-family="monospace" font-size="11">',
           width, height, width, height),
    format('<rect width="%d" height="%d" fill="#fdf6e3"/>', width, height),
    format('<text x="%d" y="24" font-size="16" text-anchor="middle">%s</text>',
           width // 2, escape(opts.title or "evlua flame graph")),
  }
  for i = 1, #r.parent do
    local w = r.total[i]
    if w > 0 then
      local f = r.frames[r.frame[i]]
      local label = r.labels[r.frame[i]]
      local px, pw = MARGIN + x[i] * scale, w * scale
      local py = height - MARGIN - depth[i] * ROW
      out[#out + 1] = format('<g><title>%s (%s)</title><rect x="%.2f" y="%d" '
                             .. 'width="%.2f" height="%d" fill="%s" rx="1"/>',
                             escape(label), share_text(r, i, whole), px, py,
                             pw, ROW - 1, colour(label, f.c or f.marker))
      local fits = math.floor((pw - 4) / CHAR)
      if fits >= 3 then
        local text = #label <= fits and label or label:sub(1, fits - 2) .. ".."
        out[#out + 1] = format('<text x="%.2f" y="%d">%s</text>', px + 2,
                               py + ROW - 4, escape(text))
      end
      out[#out + 1] = "</g>"
    end
  end
  out[#out + 1] = "</svg>"
  return concat(out, "\n") .. "\n"
end

return svg
