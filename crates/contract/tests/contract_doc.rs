//! The contract's tables and layouts against the document they mirror, `docs/device-interface.md`: every opcode's
//! byte, name and body layout, the header layouts, which records a trace may hold, the completion kinds, the fault
//! codes, the kernel catalog, the tensor accessor's words and enum values, the tile geometry and the version. Each is iterated from its one declaration in the crate, so a new record
//! type, fault code or kernel is checked here without touching this file, and neither side can drift from the other.

use ttdrv_contract::kernel::{
    ACCESSOR_WORDS, AccessorFields, BuiltinKernel, FACE_DIM, IMAGE_HEADER, ImageFields, Layout, TILE_DIM, TensorLayout,
};
use ttdrv_contract::records::{ComplHeader, ComplKind, Header, Opcode};
use ttdrv_contract::regs::FaultCode;
use ttdrv_contract::wire::FieldLayout;
use ttdrv_contract::{CONTRACT_MAJOR, CONTRACT_MINOR};

fn doc() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/device-interface.md");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The text from the heading line containing `key` to the next heading.
fn section<'a>(doc: &'a str, key: &str) -> &'a str {
    let start = doc
        .lines()
        .find(|l| l.starts_with('#') && l.contains(key))
        .unwrap_or_else(|| panic!("no heading of docs/device-interface.md contains {key}"));
    let from = start.as_ptr() as usize - doc.as_ptr() as usize;
    let rest = &doc[from + start.len()..];
    let end = rest.find("\n#").unwrap_or(rest.len());
    &rest[..end]
}

/// The cells of the first table in `text`, header and separator rows left out.
fn table(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(|l| l.trim_matches('|').split('|').map(|c| c.trim().to_owned()).collect())
        .collect()
}

/// Bytes of a field type as the document writes it.
fn type_size(ty: &str) -> usize {
    match ty {
        "u8" => 1,
        "u16" => 2,
        "u32" => 4,
        "u64" => 8,
        "u8 ×4" => 4,
        t if t.starts_with("char[") => t["char[".len()..t.len() - 1].parse().unwrap(),
        t => panic!("unknown field type `{t}` in docs/device-interface.md"),
    }
}

/// (offset, size) of every non-reserved row of a field table (offset, type, field, ...) below `limit`.
fn doc_layout(text: &str, limit: usize) -> Vec<(usize, usize)> {
    let mut v: Vec<(usize, usize)> = table(text)
        .iter()
        .filter(|r| r[2] != "reserved")
        .map(|r| (r[0].parse().unwrap_or_else(|_| panic!("offset `{}`", r[0])), r))
        .filter(|(off, _)| *off < limit)
        .map(|(off, r)| (off, type_size(&r[1])))
        .collect();
    v.sort();
    v
}

fn layout(fields: &[FieldLayout]) -> Vec<(usize, usize)> {
    let mut v: Vec<(usize, usize)> = fields.iter().map(|f| (f.offset, f.size)).collect();
    v.sort();
    v
}

/// The names written as `code` in `text`.
fn quoted(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

#[test]
fn headers_match_the_document() {
    let doc = doc();
    assert_eq!(layout(Header::FIELDS), doc_layout(section(&doc, "4.1 Header"), 64), "record header, §4.1");
    assert_eq!(layout(ComplHeader::FIELDS), doc_layout(section(&doc, "5.2 Completion ring"), 64), "§5.2");
    let image = section(&doc, "8.1 Kernel image");
    assert_eq!(layout(ImageFields::FIELDS), doc_layout(image, IMAGE_HEADER), "kernel image header, §8.1");
}

#[test]
fn every_opcode_is_the_documents() {
    let doc = doc();
    for op in Opcode::ALL {
        let heading = format!("`{:#04x} {}`", op as u8, op.name());
        let text = section(&doc, &heading);
        let body = layout(op.info().body);
        if !table(text).is_empty() {
            assert_eq!(body, doc_layout(text, 64), "body of {op} (§4.2)");
        } else if body.is_empty() {
            assert!(text.contains("No body"), "{op} has no body, but its section does not say so");
        } else {
            // "Bodies as `WRITE_LINEAR` and `WRITE_PAGED`": the layout is that of a record type the section names.
            let same = quoted(text).into_iter().filter_map(|n| Opcode::ALL.into_iter().find(|o| o.name() == n));
            assert!(
                same.filter(|o| *o != op).any(|o| layout(o.info().body) == body),
                "{op}: its section has no field table and names no record type with the same body"
            );
        }
    }
    // And the document has no opcode heading the table lacks.
    let headings =
        doc.lines().filter(|l| l.starts_with("####")).flat_map(quoted).filter(|q| q.starts_with("0x")).count();
    assert_eq!(headings, Opcode::ALL.len(), "opcode headings in §4.2");
}

#[test]
fn trace_permissions_are_the_documents() {
    let doc = doc();
    let text = section(&doc, &format!("`{:#04x} {}`", Opcode::ExecTrace as u8, Opcode::ExecTrace.name()));
    let clause = text.split([';', ',']).find(|s| s.contains("are allowed")).expect("§4.2.9 says what a trace holds");
    let mut documented = quoted(clause);
    documented.sort();
    let mut table: Vec<&str> = Opcode::ALL.into_iter().filter(|o| o.in_trace()).map(Opcode::name).collect();
    table.sort();
    assert_eq!(table, documented);
}

#[test]
fn completion_kinds_are_the_documents() {
    let doc = doc();
    let text = section(&doc, "5.2 Completion ring");
    for k in ComplKind::ALL {
        assert!(text.contains(&format!("{} `{}`", k as u8, k.info().name)), "completion kind {k:?} in §5.2");
    }
}

#[test]
fn fault_codes_are_the_documents() {
    let doc = doc();
    let rows = table(section(&doc, "7.1 Fault codes"));
    let documented: Vec<(u32, String)> = rows.iter().map(|r| (r[0].parse().unwrap(), r[1].replace('`', ""))).collect();
    let table: Vec<(u32, String)> = FaultCode::ALL.iter().map(|c| (*c as u32, c.name().to_owned())).collect();
    assert_eq!(table, documented);
}

#[test]
fn the_kernel_catalog_is_the_documents() {
    let doc = doc();
    let rows = table(section(&doc, "8.2 Built-in kernel catalog"));
    let documented: Vec<(u8, String)> = rows.iter().map(|r| (r[0].parse().unwrap(), r[1].replace('`', ""))).collect();
    let table: Vec<(u8, String)> = BuiltinKernel::ALL.iter().map(|k| (*k as u8, k.name().to_owned())).collect();
    assert_eq!(table, documented);
}

#[test]
fn the_version_is_the_documents() {
    let doc = doc();
    let version = format!("{CONTRACT_MAJOR}.{CONTRACT_MINOR}");
    assert!(doc.contains(&format!("**Contract version {version}**")), "the version line of the document");
    let history = section(&doc, "Version history");
    assert!(history.contains(&format!("- {version}:")), "§9 has no entry for {version}");
}

#[test]
fn the_accessor_is_the_documents() {
    let doc = doc();
    let text = section(&doc, "8.3 Tensor accessor");
    let heading = doc.lines().find(|l| l.contains("8.3 Tensor accessor")).unwrap_or_default();
    assert!(heading.contains(&format!("({ACCESSOR_WORDS} words)")), "§8.3 heading: {heading}");
    let rows = table(text);
    let documented: Vec<(usize, String)> =
        rows.iter().map(|r| (r[0].parse().unwrap(), r[1].replace('`', ""))).collect();
    let declared: Vec<(usize, String)> = AccessorFields::FIELDS
        .iter()
        .map(|f| {
            assert_eq!((f.size, f.offset % 4), (4, 0), "accessor field {} is not one word", f.name);
            (f.offset / 4, f.name.to_owned())
        })
        .collect();
    assert_eq!(declared, documented, "§8.3 words");
    // The enum words list every value of their table as "<value> <name>".
    let meaning = |field: &str| rows.iter().find(|r| r[1] == format!("`{field}`")).map(|r| r[2].clone()).unwrap();
    for l in Layout::ALL {
        let want = format!("{} {}", l as u32, l.info().name);
        assert!(meaning("layout").contains(&want), "§8.3 `layout` does not list {want}");
    }
    for t in TensorLayout::ALL {
        let want = format!("{} {}", t as u32, t.name());
        assert!(meaning("tensor_layout").contains(&want), "§8.3 `tensor_layout` does not list {want}");
        // A value added after 1.0 has its version-history entry.
        if t.info().since_minor > 0 {
            let history = section(&doc, "Version history");
            let entry =
                history.lines().find(|l| l.starts_with(&format!("- {CONTRACT_MAJOR}.{}:", t.info().since_minor)));
            assert!(entry.is_some_and(|e| e.contains("tensor_layout")), "§9 has no entry introducing {}", t.name());
        }
    }
}

#[test]
fn the_tile_geometry_is_the_documents() {
    let doc = doc();
    let text = section(&doc, "8.3.2 Tiled tensors");
    assert!(text.contains(&format!("tiles of {TILE_DIM} × {TILE_DIM}")), "§8.3.2 tile size");
    assert!(text.contains(&format!("four {FACE_DIM} × {FACE_DIM} faces")), "§8.3.2 face size");
    let order = format!("face × {} + (y mod {FACE_DIM}) × {FACE_DIM} + (x mod {FACE_DIM})", FACE_DIM * FACE_DIM);
    assert!(text.contains(&order), "§8.3.2 does not give the in-tile order as {order}");
}
