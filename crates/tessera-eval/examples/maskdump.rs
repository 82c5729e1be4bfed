use tessera_eval::segment::{segment_frame, SegmentParams};
use tessera_world::caption::Colour;
use tessera_world::{generate_clip, SampleOptions, Split};
fn main() {
    let a: Vec<u64> = std::env::args().skip(1).filter_map(|x| x.parse().ok()).collect();
    let opts = SampleOptions { seed: a[0], split: Split::Val, ..SampleOptions::default() };
    let clip = generate_clip(&opts, a[1]).unwrap();
    let rgb: Vec<[u8; 3]> = Colour::ALL.iter().map(|c| c.rgb()).collect();
    let f = &clip.video.frames[a[2] as usize];
    let s = segment_frame(f, 64, 64, &rgb, &SegmentParams::default());
    for y in 11..23 { let row: Vec<String> = (44..62).map(|x| { let i = 3*(y*64+x); format!("{:3}", f[i] as u32 + f[i+1] as u32 + f[i+2] as u32) }).collect(); eprintln!("{}", row.join(" ")); }
    eprintln!("{:?}", rgb);
    let g = &clip.video.frames[a[2] as usize + 4];
    let s2 = segment_frame(g, 64, 64, &rgb, &SegmentParams::default());
    for y in 0usize..64 { for x in 12usize..52 { let i = y*64+x; let near = |s: &tessera_eval::segment::Segmentation| (y.saturating_sub(2)..(y+3).min(64)).any(|yy| (x-2..x+3).any(|xx| s.labels[yy*64+xx] != 0));
      if !near(&s) && !near(&s2) && (0..3).any(|c| f[3*i+c] != g[3*i+c]) { println!("diff at {x},{y}: {:?} {:?}", &f[3*i..3*i+3], &g[3*i..3*i+3]); } } }
    for y in 0..64 {
        let line: String = (0..64).map(|x| { let l = s.labels[y*64+x]; if l == 0 {'.'} else if l == u32::MAX {'#'} else {char::from(b'0' + (l % 10) as u8)} }).collect();
        println!("{line}  {:?}", &f[3*(y*64)..3*(y*64)+3]);
    }
}
#[allow(dead_code)]
fn unused() {}
