//! The caption grammar: the one vocabulary and sentence form shared by the generator (which writes
//! captions), the evaluator (which parses prompts into expected scenes) and the prompt expander.
//! Keeping the writer and the parser in one file is what stops them drifting apart: every word
//! [`dense_caption`] can emit is a word [`parse_prompt`] knows, and a round-trip test checks it.

use std::fmt;

use serde::{Deserialize, Serialize};

// ───────────────────────────── vocabulary ─────────────────────────────

macro_rules! vocab {
    ($(#[$m:meta])* $name:ident { $($variant:ident => $word:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The word used in captions and JSON.
            pub fn name(self) -> &'static str {
                match self { $($name::$variant => $word),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

vocab!(
    /// Object shapes. Circles and rings look the same at every angle, so they never spin.
    Shape {
        Circle => "circle", Square => "square", Triangle => "triangle", Star => "star",
        Ring => "ring", Diamond => "diamond", Cross => "cross",
    }
);

vocab!(
    /// Object colours: saturated and far apart in RGB (≥ 95 apart pairwise and ≥ 90 from every
    /// [`BgColour`]) so nearest-colour segmentation is reliable.
    Colour {
        Red => "red", Orange => "orange", Yellow => "yellow", Green => "green", Cyan => "cyan",
        Blue => "blue", Purple => "purple", Pink => "pink", White => "white", Black => "black",
    }
);

vocab!(
    /// Background colours: muted tones that no object colour uses.
    BgColour { Beige => "beige", Slate => "slate", Olive => "olive", Sky => "sky" }
);

vocab!(
    /// Object size; the radius is a fraction of the frame's shorter side ([`Size::radius_fraction`]).
    Size { Small => "small", Medium => "medium", Large => "large" }
);

vocab!(
    /// Named speed classes ([`Speed::linear_fraction`] and friends give the numbers).
    Speed { Slow => "slow", Medium => "medium", Fast => "fast" }
);

vocab!(
    /// Screen directions (y grows downward on screen; "up" is toward the top edge).
    Direction {
        Right => "right", Left => "left", Up => "up", Down => "down",
        UpRight => "up_right", UpLeft => "up_left", DownRight => "down_right", DownLeft => "down_left",
    }
);

vocab!(
    /// A line of motion without its sense: "across" says sideways, not which way.
    Axis { Horizontal => "horizontal", Vertical => "vertical" }
);

vocab!(
    /// Sense of rotation as seen on screen.
    Turn { Clockwise => "clockwise", Counterclockwise => "counterclockwise" }
);

vocab!(
    /// The start position on a 3×3 grid over the frame.
    Region {
        TopLeft => "top_left", Top => "top", TopRight => "top_right",
        Left => "left", Center => "center", Right => "right",
        BottomLeft => "bottom_left", Bottom => "bottom", BottomRight => "bottom_right",
    }
);

vocab!(
    /// Background styles.
    BackgroundKind { Solid => "solid", Gradient => "gradient", Floor => "floor" }
);

vocab!(
    /// The four frame edges; the bottom edge is "the floor".
    Wall { Left => "left", Right => "right", Top => "top", Bottom => "bottom" }
);

vocab!(
    /// Motion without its parameters, for comparing parsed and generated scenes.
    MotionKind {
        Still => "still", Linear => "linear", Bounce => "bounce", Fall => "fall",
        Orbit => "orbit", Spin => "spin",
    }
);

impl Colour {
    /// sRGB value used by the renderer.
    pub fn rgb(self) -> [u8; 3] {
        match self {
            Colour::Red => [210, 30, 40],
            Colour::Orange => [245, 120, 20],
            Colour::Yellow => [240, 225, 50],
            Colour::Green => [45, 170, 65],
            Colour::Cyan => [40, 200, 215],
            Colour::Blue => [45, 75, 215],
            Colour::Purple => [135, 55, 190],
            Colour::Pink => [245, 110, 195],
            Colour::White => [245, 245, 245],
            Colour::Black => [25, 25, 25],
        }
    }

    /// The backdrop colour a prompt means by this colour ("a blue floor"): the backdrop palette
    /// has four, so by hue and lightness rather than RGB distance (which sends blue and green
    /// to slate).
    pub fn backdrop(self) -> BgColour {
        match self {
            Colour::Red | Colour::Orange | Colour::Yellow | Colour::Pink | Colour::White => {
                BgColour::Beige
            }
            Colour::Green => BgColour::Olive,
            Colour::Cyan | Colour::Blue => BgColour::Sky,
            Colour::Purple | Colour::Black => BgColour::Slate,
        }
    }

    /// The palette colour nearest to `rgb` (squared RGB distance).
    pub fn nearest(rgb: [u8; 3]) -> (Colour, u32) {
        let mut best = (Colour::Red, u32::MAX);
        for &c in Colour::ALL {
            let d = rgb_dist2(c.rgb(), rgb);
            if d < best.1 {
                best = (c, d);
            }
        }
        best
    }
}

impl BgColour {
    /// sRGB value used by the renderer.
    pub fn rgb(self) -> [u8; 3] {
        match self {
            BgColour::Beige => [205, 190, 160],
            BgColour::Slate => [80, 90, 105],
            BgColour::Olive => [125, 110, 55],
            BgColour::Sky => [160, 190, 220],
        }
    }
}

/// Squared Euclidean distance between two RGB colours.
pub fn rgb_dist2(a: [u8; 3], b: [u8; 3]) -> u32 {
    a.iter()
        .zip(b.iter())
        .map(|(&x, &y)| (x as i32 - y as i32).pow(2) as u32)
        .sum()
}

impl Size {
    /// Radius as a fraction of the frame's shorter side.
    pub fn radius_fraction(self) -> f64 {
        match self {
            Size::Small => 0.08,
            Size::Medium => 0.12,
            Size::Large => 0.17,
        }
    }
}

impl Speed {
    /// Linear and bounce speed in frame-shorter-sides per second.
    pub fn linear_fraction(self) -> f64 {
        match self {
            Speed::Slow => 0.2,
            Speed::Medium => 0.4,
            Speed::Fast => 0.7,
        }
    }

    /// Orbit angular speed in radians per second.
    pub fn orbit_rate(self) -> f64 {
        match self {
            Speed::Slow => 0.6,
            Speed::Medium => 1.2,
            Speed::Fast => 2.2,
        }
    }

    /// Spin angular speed in radians per second.
    pub fn spin_rate(self) -> f64 {
        match self {
            Speed::Slow => 1.2,
            Speed::Medium => 2.5,
            Speed::Fast => 5.0,
        }
    }

    fn adverb(self) -> &'static str {
        match self {
            Speed::Slow => "slowly",
            Speed::Medium => "steadily",
            Speed::Fast => "quickly",
        }
    }
}

impl Axis {
    /// The two directions along the axis.
    pub fn directions(self) -> &'static [Direction] {
        match self {
            Axis::Horizontal => &[Direction::Left, Direction::Right],
            Axis::Vertical => &[Direction::Up, Direction::Down],
        }
    }
}

impl Direction {
    /// Unit vector on screen (x right, y down).
    pub fn unit(self) -> (f64, f64) {
        let d = std::f64::consts::FRAC_1_SQRT_2;
        match self {
            Direction::Right => (1.0, 0.0),
            Direction::Left => (-1.0, 0.0),
            Direction::Up => (0.0, -1.0),
            Direction::Down => (0.0, 1.0),
            Direction::UpRight => (d, -d),
            Direction::UpLeft => (-d, -d),
            Direction::DownRight => (d, d),
            Direction::DownLeft => (-d, d),
        }
    }

    /// Combines a horizontal sign (-1 left, +1 right) and a vertical sign (-1 up, +1 down).
    pub fn from_signs(h: i32, v: i32) -> Option<Direction> {
        match (h.signum(), v.signum()) {
            (1, 0) => Some(Direction::Right),
            (-1, 0) => Some(Direction::Left),
            (0, -1) => Some(Direction::Up),
            (0, 1) => Some(Direction::Down),
            (1, -1) => Some(Direction::UpRight),
            (-1, -1) => Some(Direction::UpLeft),
            (1, 1) => Some(Direction::DownRight),
            (-1, 1) => Some(Direction::DownLeft),
            _ => None,
        }
    }

    /// The direction nearest to a screen vector, or `None` for a zero vector.
    pub fn nearest(dx: f64, dy: f64) -> Option<Direction> {
        if dx == 0.0 && dy == 0.0 {
            return None;
        }
        Direction::ALL.iter().copied().max_by(|a, b| {
            let (ax, ay) = a.unit();
            let (bx, by) = b.unit();
            (ax * dx + ay * dy).total_cmp(&(bx * dx + by * dy))
        })
    }

    fn phrase(self) -> &'static str {
        match self {
            Direction::Right => "to the right",
            Direction::Left => "to the left",
            Direction::Up => "upward",
            Direction::Down => "downward",
            Direction::UpRight => "up and to the right",
            Direction::UpLeft => "up and to the left",
            Direction::DownRight => "down and to the right",
            Direction::DownLeft => "down and to the left",
        }
    }

    fn short_phrase(self) -> &'static str {
        match self {
            Direction::Right => "right",
            Direction::Left => "left",
            Direction::Up => "up",
            Direction::Down => "down",
            Direction::UpRight => "up and right",
            Direction::UpLeft => "up and left",
            Direction::DownRight => "down and right",
            Direction::DownLeft => "down and left",
        }
    }
}

impl Region {
    /// The cell of a 3×3 grid holding point `(x, y)` in a `width`×`height` frame.
    pub fn of_point(x: f64, y: f64, width: f64, height: f64) -> Region {
        let col = ((x / width * 3.0).floor() as i64).clamp(0, 2);
        let row = ((y / height * 3.0).floor() as i64).clamp(0, 2);
        Region::from_cell(row as usize, col as usize)
    }

    fn from_cell(row: usize, col: usize) -> Region {
        const GRID: [[Region; 3]; 3] = [
            [Region::TopLeft, Region::Top, Region::TopRight],
            [Region::Left, Region::Center, Region::Right],
            [Region::BottomLeft, Region::Bottom, Region::BottomRight],
        ];
        GRID[row.min(2)][col.min(2)]
    }

    /// `(row, col)` in the 3×3 grid.
    pub fn cell(self) -> (usize, usize) {
        let i = Region::ALL.iter().position(|&r| r == self).unwrap_or(4);
        (i / 3, i % 3)
    }

    /// "in the top left", "at the top", "on the left".
    fn phrase(self) -> &'static str {
        match self {
            Region::TopLeft => "in the top left",
            Region::Top => "at the top",
            Region::TopRight => "in the top right",
            Region::Left => "on the left",
            Region::Center => "in the center",
            Region::Right => "on the right",
            Region::BottomLeft => "in the bottom left",
            Region::Bottom => "at the bottom",
            Region::BottomRight => "in the bottom right",
        }
    }
}

// ───────────────────────────── scene description ─────────────────────────────

/// How a group of objects moves. Directions and turns are on screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Motion {
    Still,
    /// Constant velocity; placed so it stays inside the frame for the whole clip.
    Linear {
        direction: Direction,
        speed: Speed,
    },
    /// Constant speed, reflecting off the four frame edges and off other bouncing objects.
    Bounce {
        direction: Direction,
        speed: Speed,
    },
    /// Released at rest, accelerates downward, bounces off the floor losing energy.
    Fall,
    /// Circles a fixed centre.
    Orbit {
        turn: Turn,
        speed: Speed,
    },
    /// Rotates in place.
    Spin {
        turn: Turn,
        speed: Speed,
    },
}

impl Motion {
    pub fn kind(&self) -> MotionKind {
        match self {
            Motion::Still => MotionKind::Still,
            Motion::Linear { .. } => MotionKind::Linear,
            Motion::Bounce { .. } => MotionKind::Bounce,
            Motion::Fall => MotionKind::Fall,
            Motion::Orbit { .. } => MotionKind::Orbit,
            Motion::Spin { .. } => MotionKind::Spin,
        }
    }

    pub fn direction(&self) -> Option<Direction> {
        match *self {
            Motion::Linear { direction, .. } | Motion::Bounce { direction, .. } => Some(direction),
            _ => None,
        }
    }

    pub fn turn(&self) -> Option<Turn> {
        match *self {
            Motion::Orbit { turn, .. } | Motion::Spin { turn, .. } => Some(turn),
            _ => None,
        }
    }

    pub fn speed(&self) -> Option<Speed> {
        match *self {
            Motion::Linear { speed, .. }
            | Motion::Bounce { speed, .. }
            | Motion::Orbit { speed, .. }
            | Motion::Spin { speed, .. } => Some(speed),
            _ => None,
        }
    }
}

/// A group of `count` identical objects that move the same way (different start positions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectSpec {
    /// 1..=4.
    pub count: u32,
    pub colour: Colour,
    pub shape: Shape,
    pub size: Size,
    pub motion: Motion,
    /// Start region of a single object; `None` for groups (members start in different places).
    pub region: Option<Region>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Background {
    pub kind: BackgroundKind,
    /// Solid colour, gradient top, or the backdrop above the floor.
    pub top: BgColour,
    /// Gradient bottom or floor tile colour; equal to `top` for solid backgrounds.
    pub bottom: BgColour,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Camera {
    Still,
    /// The view moves in `direction` (left or right), so the scene slides the other way.
    Pan {
        direction: Direction,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind {
    /// Reflects off a frame edge (`Bottom` is "hits the floor").
    Wall { wall: Wall },
    /// Elastic collision; `other` is a flat object index.
    Collides { other: usize },
    /// At least half of the object became hidden behind `other` (which is in front).
    PassesBehind { other: usize },
    /// After passing behind `other`, at most a tenth of it is hidden again.
    Reappears { other: usize },
}

/// Something that happened to object `object` (a flat index: groups in order, members in order).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// First frame showing the state after the event.
    pub frame: u32,
    /// Exact time in seconds from the first frame (occlusion events: the frame's time).
    pub time: f64,
    pub object: usize,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// Everything a caption can say about a clip.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SceneDescription {
    pub objects: Vec<ObjectSpec>,
    pub background: Background,
    pub camera: Camera,
    /// Sorted by frame, then object.
    pub events: Vec<Event>,
}

impl SceneDescription {
    /// Number of individual objects (sum of group counts).
    pub fn object_count(&self) -> usize {
        self.objects.iter().map(|o| o.count as usize).sum()
    }

    /// Group index of flat object index `object`.
    pub fn group_of(&self, object: usize) -> Option<usize> {
        let mut start = 0usize;
        for (g, spec) in self.objects.iter().enumerate() {
            let end = start + spec.count as usize;
            if object < end {
                return Some(g);
            }
            start = end;
        }
        None
    }
}

// ───────────────────────────── mirroring ─────────────────────────────
// A scene seen in a left-right mirror: the same objects and events with every side swapped.
// Every shape's outline is symmetric about the vertical axis, so only directions, start
// regions, senses of rotation, walls and the camera change.

impl Direction {
    pub fn mirrored(self) -> Direction {
        let (x, y) = self.unit();
        Direction::nearest(-x, y).unwrap_or(self)
    }
}

impl Region {
    pub fn mirrored(self) -> Region {
        let (row, col) = self.cell();
        Region::from_cell(row, 2 - col)
    }
}

impl Turn {
    pub fn mirrored(self) -> Turn {
        match self {
            Turn::Clockwise => Turn::Counterclockwise,
            Turn::Counterclockwise => Turn::Clockwise,
        }
    }
}

impl Motion {
    pub fn mirrored(self) -> Motion {
        match self {
            Motion::Linear { direction, speed } => Motion::Linear {
                direction: direction.mirrored(),
                speed,
            },
            Motion::Bounce { direction, speed } => Motion::Bounce {
                direction: direction.mirrored(),
                speed,
            },
            Motion::Orbit { turn, speed } => Motion::Orbit {
                turn: turn.mirrored(),
                speed,
            },
            Motion::Spin { turn, speed } => Motion::Spin {
                turn: turn.mirrored(),
                speed,
            },
            Motion::Still | Motion::Fall => self,
        }
    }
}

impl SceneDescription {
    pub fn mirrored(&self) -> SceneDescription {
        SceneDescription {
            objects: self
                .objects
                .iter()
                .map(|o| ObjectSpec {
                    motion: o.motion.mirrored(),
                    region: o.region.map(Region::mirrored),
                    ..*o
                })
                .collect(),
            background: self.background,
            camera: match self.camera {
                Camera::Pan { direction } => Camera::Pan {
                    direction: direction.mirrored(),
                },
                Camera::Still => Camera::Still,
            },
            events: self
                .events
                .iter()
                .map(|e| Event {
                    kind: match e.kind {
                        EventKind::Wall { wall: Wall::Left } => {
                            EventKind::Wall { wall: Wall::Right }
                        }
                        EventKind::Wall { wall: Wall::Right } => {
                            EventKind::Wall { wall: Wall::Left }
                        }
                        kind => kind,
                    },
                    ..*e
                })
                .collect(),
        }
    }
}

// ───────────────────────────── writing captions ─────────────────────────────

const NUMBER_WORDS: [&str; 5] = ["zero", "one", "two", "three", "four"];

fn article(word: &str) -> &'static str {
    match word.as_bytes().first() {
        Some(b'a' | b'e' | b'i' | b'o' | b'u') => "an",
        _ => "a",
    }
}

fn plural(shape: Shape) -> String {
    match shape {
        Shape::Cross => "crosses".to_string(),
        s => format!("{}s", s.name()),
    }
}

/// "a large red circle" / "two small blue squares".
fn noun_phrase(spec: &ObjectSpec, with_size: bool) -> String {
    let adjectives = if with_size {
        format!("{} {}", spec.size, spec.colour)
    } else {
        spec.colour.name().to_string()
    };
    if spec.count == 1 {
        format!("{} {} {}", article(&adjectives), adjectives, spec.shape)
    } else {
        let n = NUMBER_WORDS
            .get(spec.count as usize)
            .copied()
            .unwrap_or("several");
        format!("{n} {adjectives} {}", plural(spec.shape))
    }
}

/// How an event names an object: "the red circle" or "one of the red circles".
fn referent(spec: &ObjectSpec) -> String {
    if spec.count == 1 {
        format!("the {} {}", spec.colour, spec.shape)
    } else {
        format!("one of the {} {}", spec.colour, plural(spec.shape))
    }
}

fn verb(singular: &'static str, plural: &'static str, count: u32) -> &'static str {
    if count == 1 {
        singular
    } else {
        plural
    }
}

fn motion_phrase(motion: &Motion, count: u32) -> String {
    match *motion {
        Motion::Still => format!("{} still", verb("stays", "stay", count)),
        Motion::Linear { direction, speed } => format!(
            "{} {} {}",
            verb("moves", "move", count),
            speed.adverb(),
            direction.phrase()
        ),
        Motion::Bounce { direction, speed } => format!(
            "{} around {}, heading {}",
            verb("bounces", "bounce", count),
            speed.adverb(),
            direction.phrase().trim_start_matches("to the ")
        ),
        Motion::Fall => verb("falls", "fall", count).to_string(),
        Motion::Orbit { turn, speed } => {
            format!(
                "{} {turn} {}",
                verb("orbits", "orbit", count),
                speed.adverb()
            )
        }
        Motion::Spin { turn, speed } => format!(
            "{} {turn} {} in place",
            verb("spins", "spin", count),
            speed.adverb()
        ),
    }
}

fn short_motion(motion: &Motion, count: u32) -> String {
    match *motion {
        Motion::Still => format!("{} still", verb("stays", "stay", count)),
        Motion::Linear { direction, .. } => {
            format!(
                "{} {}",
                verb("moves", "move", count),
                direction.short_phrase()
            )
        }
        Motion::Bounce { .. } => verb("bounces", "bounce", count).to_string(),
        Motion::Fall => verb("falls", "fall", count).to_string(),
        Motion::Orbit { .. } => verb("orbits", "orbit", count).to_string(),
        Motion::Spin { .. } => verb("spins", "spin", count).to_string(),
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

fn background_sentence(bg: &Background) -> String {
    match bg.kind {
        BackgroundKind::Solid => format!("The background is plain {}.", bg.top),
        BackgroundKind::Gradient => {
            format!("The background fades from {} to {}.", bg.top, bg.bottom)
        }
        BackgroundKind::Floor => format!(
            "A plain {} backdrop stands above a checkered {} floor.",
            bg.top, bg.bottom
        ),
    }
}

fn event_phrase(scene: &SceneDescription, kind: &EventKind) -> Option<String> {
    let name = |i: usize| {
        scene
            .group_of(i)
            .map(|g| referent(&scene.objects[g]))
            .unwrap_or_else(|| "another object".to_string())
    };
    Some(match *kind {
        EventKind::Wall { wall: Wall::Left } => "bounces off the left wall".to_string(),
        EventKind::Wall { wall: Wall::Right } => "bounces off the right wall".to_string(),
        EventKind::Wall { wall: Wall::Top } => "bounces off the ceiling".to_string(),
        EventKind::Wall { wall: Wall::Bottom } => "hits the floor".to_string(),
        EventKind::Collides { other } => format!("collides with {}", name(other)),
        EventKind::PassesBehind { other } => format!("passes behind {}", name(other)),
        EventKind::Reappears { .. } => "reappears".to_string(),
    })
}

/// The long caption the model trains on: background, one sentence per group (count, size,
/// colour, shape, start region, motion with speed and direction), the camera, then one sentence
/// per object listing its events in order. A collision is told once, by the lower-indexed object.
pub fn dense_caption(scene: &SceneDescription) -> String {
    let background = background_sentence(&scene.background);
    match scene_caption_without_background(scene) {
        rest if rest.is_empty() => background,
        rest => format!("{background} {rest}"),
    }
}

/// [`dense_caption`] without its first sentence, the background: for prompts whose backdrop is
/// already fixed by given frames (image→video, extend, connect, edit).
pub fn scene_caption_without_background(scene: &SceneDescription) -> String {
    let mut sentences = Vec::new();
    for spec in &scene.objects {
        let mut s = capitalise(&noun_phrase(spec, true));
        if let Some(region) = spec.region {
            s.push(' ');
            s.push_str(region.phrase());
        }
        s.push(' ');
        s.push_str(&motion_phrase(&spec.motion, spec.count));
        s.push('.');
        sentences.push(s);
    }
    if let Camera::Pan { direction } = scene.camera {
        sentences.push(format!("The camera pans {}.", direction.phrase()));
    }
    for object in 0..scene.object_count() {
        let Some(group) = scene.group_of(object) else {
            continue;
        };
        let phrases: Vec<String> = scene
            .events
            .iter()
            .filter(|e| e.object == object)
            .filter(|e| !matches!(e.kind, EventKind::Collides { other } if other < object))
            .filter_map(|e| event_phrase(scene, &e.kind))
            .collect();
        if phrases.is_empty() {
            continue;
        }
        sentences.push(format!(
            "{} {}.",
            capitalise(&referent(&scene.objects[group])),
            phrases.join(", then ")
        ));
    }
    sentences.join(" ")
}

/// A prompt-length caption: "a red circle bounces and two blue squares move left".
pub fn short_caption(scene: &SceneDescription) -> String {
    let parts: Vec<String> = scene
        .objects
        .iter()
        .map(|spec| {
            format!(
                "{} {}",
                noun_phrase(spec, false),
                short_motion(&spec.motion, spec.count)
            )
        })
        .collect();
    match parts.len() {
        0 => "an empty scene".to_string(),
        1 => parts[0].clone(),
        n => format!("{} and {}", parts[..n - 1].join(", "), parts[n - 1]),
    }
}

// ───────────────────────────── parsing prompts ─────────────────────────────

/// An object (or group) named in a prompt; fields the prompt does not state are `None`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ParsedObject {
    /// `None` when the prompt uses a plural without a number ("red circles").
    pub count: Option<u32>,
    pub colour: Option<Colour>,
    pub shape: Option<Shape>,
    pub size: Option<Size>,
    pub motion: Option<MotionKind>,
    pub direction: Option<Direction>,
    /// The line a prompt names without a sense ("across"); a `direction` overrides it.
    #[serde(default)]
    pub axis: Option<Axis>,
    pub turn: Option<Turn>,
    pub speed: Option<Speed>,
    pub region: Option<Region>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ParsedBackground {
    pub kind: Option<BackgroundKind>,
    /// Background colours in the order named (top first).
    pub colours: Vec<BgColour>,
    /// A floor named by an object colour ("a blue floor"), as [`Colour::backdrop`] maps it;
    /// captions name floors by backdrop colour, which `colours` holds in order.
    #[serde(default)]
    pub floor: Option<BgColour>,
}

/// An event named in a prompt; `object` and `other` index [`ParsedPrompt::objects`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ParsedEvent {
    Wall { object: usize, wall: Wall },
    Collides { object: usize, other: Option<usize> },
    PassesBehind { object: usize, other: Option<usize> },
    Reappears { object: usize },
}

/// What a prompt asks for, as far as the grammar understands it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ParsedPrompt {
    pub objects: Vec<ParsedObject>,
    pub background: Option<ParsedBackground>,
    pub camera: Option<Camera>,
    pub events: Vec<ParsedEvent>,
    /// Words the grammar does not know, in order, lower-cased.
    pub unknown_words: Vec<String>,
}

/// Words that carry no meaning for the scene.
const FILLER: &[&str] = &[
    "a",
    "an",
    "the",
    "of",
    "and",
    "then",
    "in",
    "on",
    "at",
    "to",
    "from",
    "with",
    "its",
    "it",
    "is",
    "are",
    "while",
    "as",
    "into",
    "around",
    "over",
    "place",
    "frame",
    "screen",
    "image",
    "video",
    "scene",
    "view",
    "side",
    "corner",
    "part",
    "edge",
    "heading",
    "toward",
    "towards",
    "direction",
    "plain",
    "solid",
    "stands",
    "above",
    "below",
    "under",
    "there",
    "shows",
    "showing",
    "that",
    "which",
    "who",
    "by",
    "along",
    "same",
    "time",
    "both",
    "all",
    "each",
    "other",
    "another",
    "object",
    "objects",
    "shape",
    "shapes",
    "colored",
    "coloured",
    "sized",
    "size",
    "very",
    "quite",
    "bit",
    "little",
    "slightly",
    "gently",
    "smoothly",
    "for",
    "through",
    "up",
    "down",
    "back",
    "forth",
    "again",
    "just",
    "also",
    "later",
    "finally",
    "first",
    "starts",
    "start",
    "starting",
    "begins",
    "after",
    "before",
    "out",
    "be",
    "being",
    "backdrop",
    "background",
    "wall",
    "walls",
    "ceiling",
    "floor",
    "ground",
    "one",
    "its",
    "their",
    "them",
    "they",
    "this",
    "these",
    "those",
    "some",
    "onto",
    "upon",
    "off",
];

fn shape_word(w: &str) -> Option<(Shape, bool)> {
    Some(match w {
        "circle" | "ball" | "disc" | "disk" | "dot" | "sphere" | "orb" => (Shape::Circle, false),
        "circles" | "balls" | "discs" | "disks" | "dots" | "spheres" | "orbs" => {
            (Shape::Circle, true)
        }
        "square" | "box" | "cube" | "block" | "tile" => (Shape::Square, false),
        "squares" | "boxes" | "cubes" | "blocks" | "tiles" => (Shape::Square, true),
        "triangle" | "pyramid" => (Shape::Triangle, false),
        "triangles" | "pyramids" => (Shape::Triangle, true),
        "star" => (Shape::Star, false),
        "stars" => (Shape::Star, true),
        "ring" | "donut" | "doughnut" | "hoop" | "torus" => (Shape::Ring, false),
        "rings" | "donuts" | "doughnuts" | "hoops" => (Shape::Ring, true),
        "diamond" | "rhombus" | "lozenge" => (Shape::Diamond, false),
        "diamonds" | "rhombuses" => (Shape::Diamond, true),
        "cross" | "plus" => (Shape::Cross, false),
        "crosses" | "pluses" => (Shape::Cross, true),
        _ => return None,
    })
}

fn colour_word(w: &str) -> Option<Colour> {
    Some(match w {
        "red" | "crimson" | "scarlet" => Colour::Red,
        "orange" => Colour::Orange,
        "yellow" | "golden" | "gold" => Colour::Yellow,
        "green" | "lime" => Colour::Green,
        "cyan" | "aqua" | "turquoise" | "teal" => Colour::Cyan,
        "blue" => Colour::Blue,
        "purple" | "violet" => Colour::Purple,
        "pink" | "magenta" => Colour::Pink,
        "white" => Colour::White,
        "black" => Colour::Black,
        _ => return None,
    })
}

fn bg_colour_word(w: &str) -> Option<BgColour> {
    Some(match w {
        "beige" | "cream" | "tan" => BgColour::Beige,
        "slate" | "gray" | "grey" => BgColour::Slate,
        "olive" => BgColour::Olive,
        "sky" | "skyblue" => BgColour::Sky,
        _ => return None,
    })
}

fn size_word(w: &str) -> Option<Size> {
    Some(match w {
        "small" | "tiny" | "little" | "smaller" => Size::Small,
        "medium" | "mid" | "midsize" | "average" => Size::Medium,
        "large" | "big" | "huge" | "giant" | "larger" | "bigger" => Size::Large,
        _ => return None,
    })
}

fn count_word(w: &str) -> Option<u32> {
    Some(match w {
        "a" | "an" | "one" | "single" | "1" => 1,
        "two" | "2" | "pair" | "couple" => 2,
        "three" | "3" => 3,
        "four" | "4" => 4,
        "five" | "5" => 5,
        "six" | "6" => 6,
        _ => return None,
    })
}

fn speed_word(w: &str) -> Option<Speed> {
    Some(match w {
        "slowly" | "slow" | "leisurely" | "lazily" => Speed::Slow,
        "steadily" | "steady" | "moderately" => Speed::Medium,
        "quickly" | "fast" | "rapidly" | "quick" | "swiftly" | "rapid" => Speed::Fast,
        _ => return None,
    })
}

fn turn_word(w: &str) -> Option<Turn> {
    Some(match w {
        "clockwise" => Turn::Clockwise,
        "counterclockwise" | "anticlockwise" | "counter" => Turn::Counterclockwise,
        _ => return None,
    })
}

fn motion_word(w: &str) -> Option<MotionKind> {
    Some(match w {
        "still" | "stationary" | "motionless" | "static" | "rests" | "sits" | "resting"
        | "sitting" | "idle" | "stay" | "stays" | "remains" | "remain" | "unmoving" => {
            MotionKind::Still
        }
        "moves" | "move" | "moving" | "travels" | "travel" | "travelling" | "traveling"
        | "goes" | "go" | "going" | "slides" | "slide" | "sliding" | "drifts" | "drift"
        | "drifting" | "glides" | "glide" | "gliding" | "rolls" | "roll" | "rolling" | "heads"
        | "head" | "crosses" | "cross" | "shifts" => MotionKind::Linear,
        "bounces" | "bounce" | "bouncing" | "ricochets" | "ricochet" | "bouncy" => {
            MotionKind::Bounce
        }
        "falls" | "fall" | "falling" | "drops" | "drop" | "dropping" | "dropped" | "tumbles"
        | "tumble" | "plummets" | "sinks" | "gravity" => MotionKind::Fall,
        "orbits" | "orbit" | "orbiting" | "revolves" | "revolve" | "revolving" => MotionKind::Orbit,
        "spins" | "spin" | "spinning" | "rotates" | "rotate" | "rotating" | "turns" | "turn"
        | "turning" | "twirls" | "twirl" | "twirling" => MotionKind::Spin,
        _ => return None,
    })
}

/// Splits into lower-case words; sentence ends (`.`, `!`, `?`, `;`) become ".".
fn tokenize(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut Vec<String>| {
        if !word.is_empty() {
            out.push(std::mem::take(word));
        }
    };
    for ch in text.chars() {
        if ch.is_alphanumeric() {
            word.extend(ch.to_lowercase());
        } else if ch == '-' || ch == '\'' {
            // "counter-clockwise" → "counterclockwise", "ball's" → "balls" is not wanted:
            // keep hyphen joins, drop apostrophes.
            if ch == '\'' {
                flush(&mut word, &mut out);
            }
        } else {
            flush(&mut word, &mut out);
            if matches!(ch, '.' | '!' | '?' | ';') {
                out.push(".".to_string());
            }
        }
    }
    flush(&mut word, &mut out);
    out
}

/// Noun-phrase attributes seen but not yet attached to a shape noun.
#[derive(Default)]
struct Pending {
    definite: bool,
    member_of: bool,
    count: Option<u32>,
    size: Option<Size>,
    colour: Option<Colour>,
    used: bool,
}

/// What the next noun phrase or direction word belongs to.
#[derive(Clone, Copy, PartialEq)]
enum Slot {
    Subject,
    Collides,
    Behind,
    Wall,
    Camera,
}

struct PromptParser {
    out: ParsedPrompt,
    subjects: Vec<usize>,
    pending: Pending,
    slot: Slot,
    /// Direction signs being gathered for the current clause: (horizontal, vertical).
    signs: (i32, i32),
}

impl PromptParser {
    fn new() -> Self {
        Self {
            out: ParsedPrompt::default(),
            subjects: Vec::new(),
            pending: Pending::default(),
            slot: Slot::Subject,
            signs: (0, 0),
        }
    }

    fn background(&mut self) -> &mut ParsedBackground {
        self.out.background.get_or_insert_with(Default::default)
    }

    fn end_sentence(&mut self) {
        self.subjects.clear();
        self.pending = Pending::default();
        self.slot = Slot::Subject;
        self.signs = (0, 0);
    }

    /// Finds an existing object that a definite noun phrase refers to.
    fn lookup(&self, colour: Option<Colour>, shape: Option<Shape>) -> Option<usize> {
        self.out.objects.iter().position(|o| {
            (colour.is_none() || o.colour == colour) && (shape.is_none() || o.shape == shape)
        })
    }

    fn noun(&mut self, shape: Option<Shape>, is_plural: bool) {
        let p = std::mem::take(&mut self.pending);
        let existing = if p.definite || p.member_of {
            self.lookup(p.colour, shape)
        } else {
            None
        };
        let index = existing.unwrap_or_else(|| {
            let count = if p.member_of {
                None
            } else {
                p.count.or(if is_plural { None } else { Some(1) })
            };
            self.out.objects.push(ParsedObject {
                count,
                colour: p.colour,
                shape,
                size: p.size,
                ..Default::default()
            });
            self.out.objects.len() - 1
        });
        match self.slot {
            Slot::Subject | Slot::Camera => {
                if self.slot != Slot::Subject || self.subjects_have_motion() {
                    self.subjects.clear();
                }
                self.slot = Slot::Subject;
                self.signs = (0, 0);
                self.subjects.push(index);
            }
            Slot::Collides | Slot::Behind | Slot::Wall => {
                let other = Some(index);
                for &object in &self.subjects {
                    self.out.events.push(if self.slot == Slot::Behind {
                        ParsedEvent::PassesBehind { object, other }
                    } else {
                        ParsedEvent::Collides { object, other }
                    });
                }
                self.slot = Slot::Subject;
            }
        }
    }

    fn subjects_have_motion(&self) -> bool {
        self.subjects
            .iter()
            .any(|&i| self.out.objects[i].motion.is_some())
    }

    fn set_motion(&mut self, kind: MotionKind, only_if_unset: bool) {
        for &i in &self.subjects {
            let o = &mut self.out.objects[i];
            if !only_if_unset || o.motion.is_none() {
                o.motion = Some(kind);
            }
        }
    }

    fn set_direction_sign(&mut self, h: i32, v: i32) {
        if h != 0 {
            self.signs.0 = h;
        }
        if v != 0 {
            self.signs.1 = v;
        }
        let Some(direction) = Direction::from_signs(self.signs.0, self.signs.1) else {
            return;
        };
        if self.slot == Slot::Camera {
            self.out.camera = Some(Camera::Pan { direction });
            return;
        }
        self.steer_subjects(|o| o.direction = Some(direction));
    }

    /// "rolls across": a line without a sense. The camera ("pans across") takes a direction of
    /// its own.
    fn set_axis(&mut self, axis: Axis) {
        if self.slot != Slot::Camera {
            self.steer_subjects(|o| o.axis = Some(axis));
        }
    }

    /// Applies a heading word to the subjects: one with no motion yet moves in a line; only
    /// lines and bounces have a heading.
    fn steer_subjects(&mut self, set: impl Fn(&mut ParsedObject)) {
        for &i in &self.subjects {
            let o = &mut self.out.objects[i];
            if o.motion.is_none() {
                o.motion = Some(MotionKind::Linear);
            }
            if matches!(o.motion, Some(MotionKind::Linear | MotionKind::Bounce)) {
                set(o);
            }
        }
    }

    fn wall_event(&mut self, wall: Wall) {
        for &object in &self.subjects {
            let o = &mut self.out.objects[object];
            if o.motion.is_none() {
                o.motion = Some(if wall == Wall::Bottom {
                    MotionKind::Fall
                } else {
                    MotionKind::Bounce
                });
            }
            self.out.events.push(ParsedEvent::Wall { object, wall });
        }
        self.slot = Slot::Subject;
    }

    fn run(mut self, text: &str) -> ParsedPrompt {
        let toks = tokenize(text);
        let at = |i: usize| toks.get(i).map(String::as_str).unwrap_or("");
        let mut i = 0;
        while i < toks.len() {
            let w = at(i);
            let next = at(i + 1);
            i += 1;
            if w == "." {
                self.end_sentence();
                continue;
            }
            // Region: "in/at/from/near the top left (corner)".
            if matches!(w, "in" | "at" | "from" | "near" | "on") && next == "the" {
                if let Some((region, used)) = region_at(&toks, i + 1) {
                    for &s in &self.subjects {
                        self.out.objects[s].region = Some(region);
                    }
                    i += 1 + used;
                    continue;
                }
            }
            // Walls: "left wall", "right edge", "top wall", "bottom edge".
            if let Some(wall) = wall_pair(w, next) {
                self.wall_event(wall);
                i += 1;
                continue;
            }
            if matches!(w, "ceiling" | "roof") {
                self.wall_event(Wall::Top);
                continue;
            }
            if matches!(w, "floor" | "ground") {
                // "a checkered beige floor" and "a blue floor" describe the background; "hits
                // the floor" or "falls to the ground" after a subject is an event.
                // (`i` already points past `w`.)
                let before = if i >= 2 { at(i - 2) } else { "" };
                let coloured = colour_word(before).map(Colour::backdrop);
                let describes_background = coloured.is_some() || is_background_modifier(before);
                if describes_background || self.subjects.is_empty() {
                    if coloured.is_some() {
                        // The colour word was the floor's, not the next object's.
                        self.pending = Pending::default();
                        self.background().floor = coloured;
                    }
                    self.background().kind = Some(BackgroundKind::Floor);
                } else {
                    self.wall_event(Wall::Bottom);
                }
                continue;
            }
            // "a pair of", "one of the".
            if w == "of" && (self.pending.count.is_some()) {
                if self.pending.count == Some(1) {
                    self.pending.member_of = true;
                    self.pending.count = None;
                }
                self.pending.used = true;
                continue;
            }
            if let Some((shape, is_plural)) = shape_word(w) {
                // "circles"/"crosses" after a subject with nothing pending is a verb.
                let verb_like = !self.pending.used
                    && !self.subjects.is_empty()
                    && !self.subjects_have_motion()
                    && matches!(w, "circles" | "circle" | "crosses" | "cross");
                if verb_like {
                    let kind = if w.starts_with("circle") {
                        MotionKind::Orbit
                    } else {
                        MotionKind::Linear
                    };
                    self.set_motion(kind, false);
                } else {
                    self.noun(Some(shape), is_plural);
                }
                continue;
            }
            if w == "the" {
                self.pending.definite = true;
                self.pending.used = true;
                continue;
            }
            if let Some(n) = count_word(w) {
                if !(w == "one" && next == "another") {
                    self.pending.count = Some(n);
                    self.pending.used = true;
                    continue;
                }
            }
            if let Some(size) = size_word(w) {
                self.pending.size = Some(size);
                self.pending.used = true;
                continue;
            }
            if let Some(colour) = colour_word(w) {
                self.pending.colour = Some(colour);
                self.pending.used = true;
                continue;
            }
            if matches!(w, "object" | "shape" | "thing") && self.pending.used {
                self.noun(None, false);
                continue;
            }
            if matches!(w, "objects" | "shapes" | "things") && self.pending.used {
                self.noun(None, true);
                continue;
            }
            // Anything else ends a half-built noun phrase.
            self.pending = Pending::default();
            if let Some(c) = bg_colour_word(w) {
                self.background().colours.push(c);
                continue;
            }
            match w {
                "gradient" | "fades" | "fading" | "fade" => {
                    self.background().kind = Some(BackgroundKind::Gradient);
                    continue;
                }
                "checkered" | "checker" | "checkerboard" | "chequered" | "tiled" => {
                    self.background().kind = Some(BackgroundKind::Floor);
                    continue;
                }
                "plain" | "solid" | "uniform" => {
                    // Only about the background when "background"/"backdrop" is near.
                    let near = (i.saturating_sub(3)..i + 3)
                        .any(|k| matches!(at(k), "background" | "backdrop"));
                    if near {
                        self.background().kind.get_or_insert(BackgroundKind::Solid);
                    }
                    continue;
                }
                "camera" => {
                    self.slot = Slot::Camera;
                    self.signs = (0, 0);
                    continue;
                }
                "pans" | "pan" | "panning" => {
                    self.slot = Slot::Camera;
                    self.signs = (0, 0);
                    continue;
                }
                "collides" | "collide" | "colliding" | "bumps" | "bump" | "crashes" | "crash"
                | "smashes" | "hits" | "hit" | "strikes" => {
                    self.slot = Slot::Collides;
                    continue;
                }
                "lands" | "land" | "landing" | "reaches" | "touches" => {
                    self.slot = Slot::Wall;
                    continue;
                }
                "passes" | "pass" | "passing" | "disappears" | "hides" | "hidden" | "vanishes" => {
                    self.slot = Slot::Behind;
                    continue;
                }
                "behind" => {
                    self.slot = Slot::Behind;
                    continue;
                }
                "reappears" | "reappear" | "reemerges" | "emerges" | "reappearing" => {
                    for &object in &self.subjects {
                        self.out.events.push(ParsedEvent::Reappears { object });
                    }
                    continue;
                }
                "off" if self.slot != Slot::Camera => {
                    self.slot = Slot::Wall;
                    continue;
                }
                _ => {}
            }
            if let Some(t) = turn_word(w) {
                for &s in &self.subjects {
                    self.out.objects[s].turn = Some(t);
                }
                if w == "counter" && next == "clockwise" {
                    i += 1;
                }
                continue;
            }
            if let Some(sp) = speed_word(w) {
                for &s in &self.subjects {
                    self.out.objects[s].speed = Some(sp);
                }
                continue;
            }
            let sign = match w {
                "right" | "rightward" | "rightwards" | "east" => Some((1, 0)),
                "left" | "leftward" | "leftwards" | "west" => Some((-1, 0)),
                "up" | "upward" | "upwards" | "rises" | "rising" | "north" => Some((0, -1)),
                "down" | "downward" | "downwards" | "south" => Some((0, 1)),
                _ => None,
            };
            if let Some((h, v)) = sign {
                self.set_direction_sign(h, v);
                continue;
            }
            let axis = match w {
                "across" | "sideways" | "horizontally" => Some(Axis::Horizontal),
                "vertically" => Some(Axis::Vertical),
                _ => None,
            };
            if let Some(axis) = axis {
                self.set_axis(axis);
                continue;
            }
            if let Some(kind) = motion_word(w) {
                // "bounces off the wall" is an event; the motion is only implied.
                let event_verb = kind == MotionKind::Bounce && next == "off";
                self.set_motion(kind, event_verb);
                continue;
            }
            if !FILLER.contains(&w) {
                self.out.unknown_words.push(w.to_string());
            }
        }
        self.out
    }
}

fn is_background_modifier(w: &str) -> bool {
    bg_colour_word(w).is_some()
        || matches!(
            w,
            "checkered" | "checker" | "checkerboard" | "chequered" | "tiled" | "plain" | "solid"
        )
}

/// "left wall" → Left, "bottom edge" → Bottom.
fn wall_pair(w: &str, next: &str) -> Option<Wall> {
    if !matches!(next, "wall" | "edge" | "side" | "border") {
        return None;
    }
    Some(match w {
        "left" => Wall::Left,
        "right" => Wall::Right,
        "top" | "upper" => Wall::Top,
        "bottom" | "lower" => Wall::Bottom,
        _ => return None,
    })
}

/// Reads a region phrase starting at `toks[i]` ("top left", "center", "upper right corner");
/// returns it and how many tokens it used.
fn region_at(toks: &[String], i: usize) -> Option<(Region, usize)> {
    let word = |k: usize| toks.get(k).map(String::as_str).unwrap_or("");
    let vertical = |w: &str| match w {
        "top" | "upper" => Some(0),
        "middle" | "center" | "centre" => Some(1),
        "bottom" | "lower" => Some(2),
        _ => None,
    };
    let horizontal = |w: &str| match w {
        "left" => Some(0),
        "middle" | "center" | "centre" => Some(1),
        "right" => Some(2),
        _ => None,
    };
    let (row, col, used) = if let Some(r) = vertical(word(i)) {
        match horizontal(word(i + 1)) {
            Some(c) if wall_pair(word(i + 1), word(i + 2)).is_none() => (r, c, 2),
            _ => (r, 1, 1),
        }
    } else if let Some(c) = horizontal(word(i)) {
        (1, c, 1)
    } else {
        return None;
    };
    if wall_pair(word(i), word(i + 1)).is_some() {
        return None;
    }
    Some((Region::from_cell(row, col), used))
}

/// Parses a caption or a free-form prompt into the objects, background, camera and events the
/// grammar recognises. Understands [`dense_caption`] and [`short_caption`] output exactly and
/// common paraphrases ("ball", "box", "drops", "rotates", "ground", "a pair of"). Never fails:
/// words it cannot place are listed in `unknown_words`.
pub fn parse_prompt(text: &str) -> ParsedPrompt {
    PromptParser::new().run(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(count: u32, colour: Colour, shape: Shape, motion: Motion) -> ObjectSpec {
        ObjectSpec {
            count,
            colour,
            shape,
            size: Size::Large,
            motion,
            region: if count == 1 {
                Some(Region::TopLeft)
            } else {
                None
            },
        }
    }

    fn scene() -> SceneDescription {
        SceneDescription {
            objects: vec![
                spec(
                    1,
                    Colour::Red,
                    Shape::Circle,
                    Motion::Bounce {
                        direction: Direction::DownRight,
                        speed: Speed::Fast,
                    },
                ),
                spec(
                    2,
                    Colour::Blue,
                    Shape::Square,
                    Motion::Linear {
                        direction: Direction::Left,
                        speed: Speed::Slow,
                    },
                ),
            ],
            background: Background {
                kind: BackgroundKind::Floor,
                top: BgColour::Sky,
                bottom: BgColour::Beige,
            },
            camera: Camera::Still,
            events: vec![
                Event {
                    frame: 3,
                    time: 0.2,
                    object: 0,
                    kind: EventKind::Wall { wall: Wall::Left },
                },
                Event {
                    frame: 5,
                    time: 0.3,
                    object: 0,
                    kind: EventKind::Collides { other: 2 },
                },
                Event {
                    frame: 5,
                    time: 0.3,
                    object: 2,
                    kind: EventKind::Collides { other: 0 },
                },
            ],
        }
    }

    #[test]
    fn dense_caption_reads_naturally() {
        assert_eq!(
            dense_caption(&scene()),
            "A plain sky backdrop stands above a checkered beige floor. \
             A large red circle in the top left bounces around quickly, heading down and to the right. \
             Two large blue squares move slowly to the left. \
             The red circle bounces off the left wall, then collides with one of the blue squares."
        );
        assert_eq!(
            short_caption(&scene()),
            "a red circle bounces and two blue squares move left"
        );
    }

    #[test]
    fn dense_caption_parses_back() {
        let p = parse_prompt(&dense_caption(&scene()));
        assert!(p.unknown_words.is_empty(), "{:?}", p.unknown_words);
        assert_eq!(p.objects.len(), 2, "{p:?}");
        let a = &p.objects[0];
        assert_eq!(
            (a.count, a.colour, a.shape, a.size),
            (
                Some(1),
                Some(Colour::Red),
                Some(Shape::Circle),
                Some(Size::Large)
            )
        );
        assert_eq!(a.motion, Some(MotionKind::Bounce));
        assert_eq!(a.direction, Some(Direction::DownRight));
        assert_eq!(a.speed, Some(Speed::Fast));
        assert_eq!(a.region, Some(Region::TopLeft));
        let b = &p.objects[1];
        assert_eq!((b.count, b.motion), (Some(2), Some(MotionKind::Linear)));
        assert_eq!(b.direction, Some(Direction::Left));
        let bg = p.background.clone().unwrap_or_default();
        assert_eq!(bg.kind, Some(BackgroundKind::Floor));
        assert_eq!(bg.colours, vec![BgColour::Sky, BgColour::Beige]);
        assert_eq!(
            p.events,
            vec![
                ParsedEvent::Wall {
                    object: 0,
                    wall: Wall::Left
                },
                ParsedEvent::Collides {
                    object: 0,
                    other: Some(1)
                }
            ]
        );
    }

    #[test]
    fn across_names_a_line_not_a_sense() {
        let p = parse_prompt("a red ball bounces across a blue floor");
        let o = &p.objects[0];
        assert_eq!(
            (o.motion, o.axis),
            (Some(MotionKind::Bounce), Some(Axis::Horizontal))
        );
        assert_eq!(o.direction, None);
        // With no motion word it moves in a line; a direction named as well is kept.
        let p = parse_prompt("a blue star sideways");
        let o = &p.objects[0];
        assert_eq!(
            (o.motion, o.axis),
            (Some(MotionKind::Linear), Some(Axis::Horizontal))
        );
        let p = parse_prompt("a green square slides vertically upward");
        let o = &p.objects[0];
        assert_eq!(
            (o.axis, o.direction),
            (Some(Axis::Vertical), Some(Direction::Up))
        );
        let p = parse_prompt("a star spins. the camera pans across");
        assert_eq!(p.objects[0].axis, None);
        assert!(p.unknown_words.is_empty(), "{:?}", p.unknown_words);
    }

    #[test]
    fn paraphrases() {
        let p = parse_prompt("A pair of big green balls drop onto the ground.");
        assert_eq!(p.objects.len(), 1);
        let o = &p.objects[0];
        assert_eq!(o.count, Some(2));
        assert_eq!(o.shape, Some(Shape::Circle));
        assert_eq!(o.size, Some(Size::Large));
        assert_eq!(o.motion, Some(MotionKind::Fall));
        assert!(p.unknown_words.is_empty(), "{:?}", p.unknown_words);

        let p = parse_prompt("a yellow box slides to the right while a purple cube rotates");
        assert_eq!(p.objects.len(), 2);
        assert_eq!(p.objects[0].motion, Some(MotionKind::Linear));
        assert_eq!(p.objects[0].direction, Some(Direction::Right));
        assert_eq!(p.objects[1].shape, Some(Shape::Square));
        assert_eq!(p.objects[1].motion, Some(MotionKind::Spin));

        let p = parse_prompt("2 red triangles travel up and to the left; the camera pans right");
        assert_eq!(p.objects[0].count, Some(2));
        assert_eq!(p.objects[0].direction, Some(Direction::UpLeft));
        assert_eq!(
            p.camera,
            Some(Camera::Pan {
                direction: Direction::Right
            })
        );

        let p = parse_prompt("a small white ball passes behind the black box and reappears");
        assert_eq!(p.objects.len(), 2);
        assert_eq!(
            p.events,
            vec![
                ParsedEvent::PassesBehind {
                    object: 0,
                    other: Some(1)
                },
                ParsedEvent::Reappears { object: 0 }
            ]
        );

        let p = parse_prompt("two red circles circle counter-clockwise");
        assert_eq!(p.objects.len(), 1);
        assert_eq!(p.objects[0].motion, Some(MotionKind::Orbit));
        assert_eq!(p.objects[0].turn, Some(Turn::Counterclockwise));
    }

    #[test]
    fn unknown_words_are_reported() {
        let p = parse_prompt("a red circle dances wildly");
        assert_eq!(p.unknown_words, vec!["dances", "wildly"]);
        assert_eq!(p.objects[0].colour, Some(Colour::Red));
    }

    #[test]
    fn palette_is_well_separated() {
        for (i, &a) in Colour::ALL.iter().enumerate() {
            for &b in &Colour::ALL[i + 1..] {
                assert!(rgb_dist2(a.rgb(), b.rgb()) >= 95 * 95, "{a} vs {b}");
            }
            for &bg in BgColour::ALL {
                assert!(rgb_dist2(a.rgb(), bg.rgb()) >= 90 * 90, "{a} vs {bg}");
            }
        }
    }
}
