"""Templates of the long-chat development set (``benchmarks/devset_longchat.py``): topics of the
distractor sessions and the facts behind the questions. Data only, no logic."""

from __future__ import annotations

# topic -> (user requests, assistant sentences). Assistant turns are built from these sentences,
# so distractor sessions talk about the same things as the questions (dogs, running, rent, books...).
TOPICS: dict[str, tuple[list[str], list[str]]] = {
    "pets": (
        [
            "How often should I take a young dog to the vet?",
            "What is a good routine for feeding a cat?",
            "How do I stop a dog from pulling on the leash?",
            "Any tips for introducing a new pet to the household?",
            "What should I pack for a road trip with a dog?",
        ],
        [
            "Most vets recommend a check-up once a year, and twice a year for older animals.",
            "A consistent feeding schedule helps a cat feel secure and makes it easier to notice appetite changes.",
            "Leash pulling usually improves when you stop walking the moment the leash goes tight.",
            "Reward the behaviour you want with small treats and keep training sessions under ten minutes.",
            "Rescue dogs often need a few weeks before their real personality shows.",
            "Introduce a new cat to a resident cat gradually, starting with scent swapping through a closed door.",
            "Greyhounds, retrievers and terriers have very different exercise needs, so match walks to the breed.",
            "Keep the name short and distinct from common commands so the dog learns it quickly.",
            "Pet insurance is worth comparing carefully, because exclusions for pre-existing conditions vary.",
            "A crate can become a safe den if it is never used as a punishment.",
            "Brushing a dog's teeth a few times a week prevents a lot of expensive dental work later.",
            "Cats usually prefer several small meals and fresh water away from their food bowl.",
            "For a road trip, bring the pet's usual food, a collapsible bowl, and a copy of the vaccination record.",
            "Microchipping and an up-to-date tag make it far more likely that a lost pet comes home.",
        ],
    ),
    "running": (
        [
            "How should I structure my weekly running plan?",
            "What should I eat before a long run?",
            "How do I avoid shin splints when I increase mileage?",
            "Is it better to run in the morning or the evening?",
            "How do I pick the right running shoes?",
        ],
        [
            "Increase your weekly mileage by no more than about ten percent to give tendons time to adapt.",
            "Most of your runs should be at an easy, conversational pace, with one harder session a week.",
            "A long run on the weekend builds endurance more than anything else in the plan.",
            "Before a long run, a light breakfast with carbohydrates about ninety minutes ahead works for most people.",
            "Shin splints often come from doing too much too soon, so add rest days when the pain starts.",
            "Running shoes should be replaced every 500 to 800 kilometres, depending on your weight and stride.",
            "A gait analysis at a specialist store can help you choose between neutral and stability shoes.",
            "Strength work for the hips and calves reduces injury risk for runners of every level.",
            "Interval training, such as six times 800 metres, improves your speed for the 5k and 10k.",
            "Treadmill running is a fine option in bad weather, though trails are kinder to the joints.",
            "Race day pacing matters: starting too fast is the most common mistake in a half marathon.",
            "Sleep is part of training; adaptation happens while you recover, not while you run.",
            "Hydration needs differ a lot between runners, so test your drinking strategy on training runs.",
            "A couch-to-5K style plan alternates walking and running until you can run thirty minutes.",
        ],
    ),
    "cooking": (
        [
            "Can you give me a quick weeknight dinner idea?",
            "How do I make a good tomato sauce from scratch?",
            "What's the best way to meal prep for the week?",
            "How do I keep fresh herbs from wilting?",
            "Can you suggest a dessert that doesn't need an oven?",
        ],
        [
            "A sheet-pan dinner with vegetables, chickpeas and a simple spice rub takes about thirty minutes.",
            "For a tomato sauce, soften onion and garlic in olive oil, add the tomatoes and simmer slowly.",
            "Salt the pasta water generously; it is the only chance to season the pasta itself.",
            "Meal prep works best when you cook components, like grains and roasted vegetables, "
            "rather than full meals.",
            "Store soft herbs like basil and parsley upright in a glass of water, loosely covered.",
            "A no-bake cheesecake or a chocolate mousse both set in the fridge in a few hours.",
            "Risotto needs patience: add warm stock a ladle at a time and keep stirring.",
            "Cast iron pans give a better sear on mushrooms and tofu than non-stick pans.",
            "Many recipes can be made vegetarian by swapping the meat for lentils, beans or mushrooms.",
            "Taste as you go and adjust acidity with a squeeze of lemon or a splash of vinegar.",
            "Freezing portions of soup or curry gives you ready meals on busy evenings.",
            "Toasting spices in a dry pan for a minute brings out much more flavour.",
            "Shellfish, nuts and dairy are common allergens, so check labels on stocks and sauces.",
            "A simple vinaigrette is three parts oil to one part vinegar with mustard and salt.",
        ],
    ),
    "travel": (
        [
            "What should I know before booking flights for a long trip?",
            "How do I plan a week in a city I've never visited?",
            "What are some tips for packing light?",
            "How can I deal with jet lag?",
            "Should I get travel insurance for a short trip?",
        ],
        [
            "Flights are usually cheapest when booked six to eight weeks ahead, though this varies by route.",
            "Aisle seats make it easier to stretch, while window seats are better if you want to sleep.",
            "Plan one major sight per day and leave afternoons open for wandering neighbourhoods.",
            "A carry-on only trip is possible if you pack clothes that mix and match and do laundry once.",
            "To reduce jet lag, shift your sleep schedule an hour a day before departure and get morning light.",
            "Travel insurance is mainly worth it for medical cover and for expensive non-refundable bookings.",
            "Hostels are a good budget choice and many now offer private rooms as well as dorms.",
            "Hotels near the main station save time on arrival and departure days.",
            "A city card often includes public transport and museum entries, which pays off in two or three days.",
            "Check whether your destination needs a visa or an electronic travel authorisation well ahead.",
            "Local markets and bakeries are the easiest way to eat well without spending much.",
            "Keep digital and paper copies of your passport and bookings in separate places.",
            "Trains between neighbouring cities are often faster door to door than flying.",
            "Shoulder season, spring or autumn, means fewer crowds and lower prices almost everywhere.",
        ],
    ),
    "money": (
        [
            "How do I set up a monthly budget that I'll actually stick to?",
            "Should I pay off debt or save first?",
            "How big should an emergency fund be?",
            "Is it worth refinancing a car loan?",
            "How do I negotiate my rent when the lease renews?",
        ],
        [
            "The fifty-thirty-twenty rule splits income into needs, wants and savings as a starting point.",
            "An emergency fund of three to six months of essential expenses is the usual recommendation.",
            "Paying off high-interest debt first usually beats investing, because the return is guaranteed.",
            "Automate savings on payday so the money never sits in your checking account.",
            "Rent is usually the biggest line in a budget, so it deserves the most attention at renewal time.",
            "When the lease renews, compare similar apartments nearby and bring those numbers to the landlord.",
            "Track every expense for one month before setting limits; most people underestimate small purchases.",
            "A high-yield savings account keeps the emergency fund liquid while earning some interest.",
            "Refinancing makes sense when the new rate is clearly lower and the fees are small.",
            "Review subscriptions every few months; they quietly add up to a surprising amount.",
            "Sinking funds for irregular costs, like car repairs or gifts, keep them from wrecking the budget.",
            "A salary raise is a good moment to increase your savings rate before spending adjusts.",
            "Index funds offer broad diversification with low fees for long-term investing.",
            "Write down your financial goals with a target amount and a date, and revisit them quarterly.",
        ],
    ),
    "music": (
        [
            "How can I practice an instrument more consistently?",
            "What's a good way to learn music theory as an adult?",
            "How do I get better at playing by ear?",
            "Any tips for performing in front of people?",
            "How should I warm up before practicing?",
        ],
        [
            "Short daily practice, even fifteen minutes, beats one long session at the weekend.",
            "Learning scales and chord shapes slowly and accurately builds the muscle memory for faster playing.",
            "Playing along with recordings trains your ear and your timing at the same time.",
            "A metronome is unforgiving at first, but it is the fastest way to clean up rhythm.",
            "Guitar, piano and ukulele share the same chord theory, so what you learn transfers between them.",
            "Record yourself regularly; you hear mistakes on a recording that you miss while playing.",
            "Stage nerves fade with exposure, so start with small audiences like friends or an open mic.",
            "Jazz standards are a great way to learn harmony because the chord changes are so varied.",
            "Warm up with long tones or slow scales before working on difficult passages.",
            "A teacher gives feedback on posture and technique that is hard to get from videos alone.",
            "Set a specific goal for each practice session, such as one difficult bar or one new chord change.",
            "Listening actively to music you love is part of practice, not a break from it.",
            "Ear training apps can help you recognise intervals and chord qualities in a few minutes a day.",
            "Take breaks during long sessions to avoid strain in the wrists and shoulders.",
        ],
    ),
    "health": (
        [
            "How much sleep do adults really need?",
            "What can I do about back pain from sitting all day?",
            "How do I know if I should see a doctor about a rash?",
            "Is coffee bad for my sleep?",
            "How often should I go to the dentist?",
        ],
        [
            "Most adults need seven to nine hours of sleep, and consistency matters as much as duration.",
            "Caffeine has a half-life of about five hours, so an afternoon coffee can still affect your sleep.",
            "Getting up every thirty to forty-five minutes helps with back pain from long periods of sitting.",
            "A rash that spreads quickly, blisters or comes with fever should be checked by a doctor promptly.",
            "Most dentists recommend a cleaning and check-up every six months.",
            "Physical therapy often works better than rest alone for knee and back problems.",
            "Stretches like the child's pose and knee-to-chest can relieve a stiff lower back.",
            "Drinking enough water and eating enough fibre helps with energy levels through the day.",
            "Allergy testing can identify triggers so you don't have to guess from symptoms.",
            "Regular exercise improves sleep quality, though very late workouts can keep some people awake.",
            "Keep a symptom diary before an appointment so you can give the doctor precise details.",
            "Screen light in the evening delays melatonin release, so dim devices an hour before bed.",
            "Herbal teas such as peppermint or rooibos are caffeine-free alternatives in the afternoon.",
            "A standing desk helps only if you also change position often; standing all day has its own problems.",
        ],
    ),
    "home": (
        [
            "How do I plan a small kitchen renovation?",
            "What's the best way to organise a tiny apartment?",
            "How do I move heavy furniture without hurting myself?",
            "Any tips for keeping houseplants alive?",
            "How can I make my apartment warmer in winter?",
        ],
        [
            "Set a renovation budget with a contingency of about fifteen percent for surprises.",
            "In a small apartment, vertical storage and furniture with hidden storage make the biggest difference.",
            "Furniture sliders and lifting straps make moving heavy pieces much safer, especially on stairs.",
            "Most houseplants die from overwatering, so check the soil with a finger before watering.",
            "Draught excluders and thermal curtains are cheap ways to keep a flat warmer.",
            "Monstera, pothos and snake plants tolerate low light and irregular watering.",
            "A fiddle-leaf fig needs bright indirect light and dislikes being moved around.",
            "Repot plants in spring, going up only one pot size at a time.",
            "Get at least three quotes from contractors and ask for references from recent jobs.",
            "Declutter one category at a time, such as clothes, books or papers, rather than room by room.",
            "An elevator-free building means planning deliveries and moves carefully.",
            "Label boxes with the room and a short list of contents when you move.",
            "LED bulbs with a warm colour temperature make rooms feel cosier in the evening.",
            "A standing desk or a folding desk can turn a corner of the living room into a workspace.",
        ],
    ),
    "work": (
        [
            "How do I prepare for a performance review?",
            "What's a good way to ask for a promotion?",
            "How can I manage my time better at work?",
            "How do I handle a difficult coworker?",
            "Any tips for my first week at a new job?",
        ],
        [
            "Before a review, write down concrete results from the past months with numbers where possible.",
            "Asking for a promotion goes better when you show you already work at the next level.",
            "Block time in your calendar for deep work and protect it like a meeting.",
            "With a difficult coworker, address specific behaviour privately and early "
            "rather than letting it build up.",
            "In the first week of a new job, focus on learning names, tools and how decisions get made.",
            "Probation periods usually end with a review, so ask early what success looks like.",
            "A weekly list of three priorities keeps the urgent from crowding out the important.",
            "Night shifts disrupt sleep, so blackout curtains and a fixed routine help a lot.",
            "Analyst roles reward clear writing as much as technical skill.",
            "Keep a brag document of achievements; it makes reviews and job applications much easier.",
            "Say no to new work by explaining what would have to be dropped to make room for it.",
            "Mentors inside and outside your company give different and equally useful perspectives.",
            "Batch email and messages into a few slots per day to reduce context switching.",
            "Online courses can support a promotion case if they match skills your team needs.",
        ],
    ),
    "books": (
        [
            "Can you suggest a book for a long flight?",
            "How do I read more books in a year?",
            "What are some good science fiction classics?",
            "How do I start a book club?",
            "Is it worth keeping a reading journal?",
        ],
        [
            "Audiobooks during commutes are an easy way to add a dozen books a year.",
            "Science fiction classics include Dune, The Left Hand of Darkness and Foundation.",
            "Historical fiction brings periods like ancient Rome or Tudor England to life.",
            "A book club works best with a fixed day each month and a rotating host who picks the book.",
            "A reading journal with a few lines per book helps you remember what you read.",
            "Reading twenty pages a day adds up to more than twenty books a year.",
            "Libraries lend ebooks and audiobooks through apps, often with short waiting lists.",
            "Popular science books about statistics and data are a good bridge into technical topics.",
            "Keep a book with you at all times; waiting rooms and queues become reading time.",
            "Don't be afraid to abandon a book that isn't working for you after fifty pages.",
            "Literary agents usually ask for a query letter and the first chapters before the full manuscript.",
            "Short story collections are ideal when your reading time comes in small pieces.",
            "Alternating fiction and non-fiction keeps a reading habit from going stale.",
            "Many readers find that setting a yearly goal in an app keeps them motivated.",
        ],
    ),
    "tech": (
        [
            "How do I keep my passwords secure?",
            "What's a good way to back up my photos?",
            "Which laptop specs matter for programming?",
            "How can I speed up an old computer?",
            "Should I learn Python or JavaScript first?",
        ],
        [
            "A password manager lets you use a long unique password for every account.",
            "Two-factor authentication with an app is much safer than codes sent by text message.",
            "The 3-2-1 backup rule means three copies, on two kinds of media, with one off-site.",
            "For programming, sixteen gigabytes of memory and a fast SSD matter more than the processor.",
            "Removing startup programs and adding an SSD can make an old computer feel new.",
            "Python is often recommended first because its syntax is readable and it is used everywhere.",
            "Keyboard shortcuts and a good text editor save a surprising amount of time every day.",
            "Cloud photo services are convenient, but keep a local copy in case an account is locked.",
            "Update your operating system and browser promptly; most attacks use known holes.",
            "An online course with small projects keeps motivation higher than reading documentation alone.",
            "Version control with git is worth learning early, even for personal projects.",
            "Phishing emails often create urgency; check the sender address before clicking anything.",
            "A mechanical keyboard is a matter of taste; ergonomics and key layout matter more than switches.",
            "External drives fail too, so check your backups by restoring a few files now and then.",
        ],
    ),
    "hobbies": (
        [
            "How do I get started with photography?",
            "What's a relaxing hobby I could pick up?",
            "How do I start a vegetable garden on a balcony?",
            "Any tips for learning to knit?",
            "How do I find a pottery class?",
        ],
        [
            "For photography, learn the exposure triangle of aperture, shutter speed and ISO before buying lenses.",
            "Knitting starts with the knit and purl stitches; a simple scarf is the classic first project.",
            "Tomatoes, herbs and lettuce grow well in containers on a sunny balcony.",
            "Tomato seedlings need hardening off for a week before they go outside.",
            "Pottery studios often run beginner courses of six to eight weeks on the wheel.",
            "Community centres and libraries list workshops for many hobbies at low cost.",
            "Stand-up comedy nights, concerts and theatre are easy ways to get out of the house.",
            "A hobby is more relaxing when you drop the pressure to be good at it quickly.",
            "Join a local club or an online forum to learn faster and stay motivated.",
            "Sketching for ten minutes a day improves observation more than occasional long sessions.",
            "Jigsaw puzzles, baking and gardening are popular ways to unwind after work.",
            "A photography walk with a single fixed lens teaches composition quickly.",
            "Language learning apps keep a streak counter, which turns practice into a daily habit.",
            "Board game cafes are a good way to try many games before buying one.",
        ],
    ),
}

GENERIC = [
    "That's a great question, and it depends a little on your situation.",
    "Here are a few things to consider.",
    "Everyone's circumstances are different, so treat these as starting points rather than rules.",
    "If you want, I can go into more detail on any of these points.",
    "The most important thing is to start small and build a habit you can keep.",
    "It also helps to write down what you try and what works, so you can adjust over time.",
    "A common mistake is trying to change everything at once.",
    "Let me know how it goes, and we can refine the plan together.",
    "In short, consistency matters more than intensity.",
    "It's worth checking local rules and prices, since they vary a lot from place to place.",
    "Many people find it useful to set a reminder on their phone.",
    "There is no single right answer here, but a few principles hold in most cases.",
]

FOLLOW_UPS = [
    "Thanks, that helps. Can you say more about the first point?",
    "Makes sense. What would you do first?",
    "Okay, and what if I only have half an hour a day?",
    "Got it. Is there anything I should avoid?",
    "Interesting. How long does it usually take to see results?",
    "Thanks! Could you summarise that as a short checklist?",
    "What mistakes do beginners usually make?",
    "How much should I expect to spend on that?",
]

# Question types, each a list of templates. "says" are the user's statements (one per evidence
# session, in time order, {gap} days apart where given); "ask" the question. Assistant facts carry
# the request the user makes and the fact the assistant states within a long answer.
USER_FACTS = [
    ("Quick background: I work as a pediatric nurse at St. Anne's, mostly night shifts.", "What do I do for a living?"),
    ("My daughter Priya just started kindergarten at Maple Grove Elementary.", "Which school does my daughter go to?"),
    ("I drive a 2016 Subaru Outback, so cargo space isn't really a problem for me.", "What car do I have?"),
    ("We adopted a rescue greyhound last month and named her Juniper.", "What is my dog called?"),
    (
        "I ran my first half marathon in Porto last spring in 1:52, which I'm pretty proud of.",
        "What was my finishing time in my first half marathon?",
    ),
    ("My apartment is on the fourth floor and there's no elevator.", "Which floor is my apartment on?"),
    ("I'm allergic to shellfish, so keep that in mind for anything food-related.", "What am I allergic to?"),
    ("My grandmother taught me to knit when I was nine, she was very patient.", "Who taught me to knit?"),
]

ASSISTANT_FACTS = [
    (
        "cooking",
        "Can you suggest a funny name for my sourdough starter?",
        "My favourite suggestion for your sourdough starter is 'Clint Yeastwood', with 'Bread Pitt' as a runner-up.",
        "What name did you suggest for my sourdough starter?",
    ),
    (
        "travel",
        "Can you recommend a hotel in Kyoto that is close to the station?",
        "For Kyoto, I'd recommend the Hotel Granvia Kyoto, which is built right into the station building.",
        "Which hotel in Kyoto did you recommend to me?",
    ),
    (
        "home",
        "What houseplant would you recommend for a total beginner?",
        "For a total beginner I'd pick a ZZ plant (Zamioculcas zamiifolia): it survives weeks without water.",
        "Which houseplant did you say is best for a beginner?",
    ),
    (
        "running",
        "How much should I drink during a long run in summer?",
        "As a rule of thumb, aim for about 400 to 800 millilitres of fluid per hour on long summer runs.",
        "How much should I drink per hour on long runs, according to you?",
    ),
    (
        "books",
        "Is there a readable book that explains statistics without heavy maths?",
        "I'd start with 'The Art of Statistics' by David Spiegelhalter; it explains ideas through real stories.",
        "Which statistics book did you recommend?",
    ),
    (
        "health",
        "What's a gentle stretch for lower back stiffness in the morning?",
        "Try the cat-cow stretch: ten slow rounds on hands and knees, arching and rounding your spine.",
        "What stretch did you suggest for my lower back?",
    ),
    (
        "cooking",
        "What wine would go with a mushroom risotto?",
        "With a mushroom risotto, a Pinot Noir from Oregon's Willamette Valley is a lovely earthy match.",
        "What wine did you recommend with the mushroom risotto?",
    ),
    (
        "tech",
        "Which password manager would you recommend for a family?",
        "For a family, I'd recommend Bitwarden: it's open source, audited, and the family plan is inexpensive.",
        "Which password manager did you recommend?",
    ),
]

PREFERENCES = [
    (
        "I've been vegetarian for six years, so no meat recipes for me please.",
        "Can you suggest a dinner I could cook this weekend?",
    ),
    (
        "I always pick aisle seats, I feel claustrophobic by the window.",
        "Any advice for choosing my seat on the flight to Denver?",
    ),
    (
        "I only listen to jazz while working, mostly Bill Evans and Chet Baker.",
        "What music should I put on to focus at work?",
    ),
    ("Honestly I hate treadmills, I only run outdoors on trails.", "How should I plan my runs this winter?"),
    (
        "I love historical fiction, especially anything set in ancient Rome.",
        "Can you recommend a novel for my vacation?",
    ),
    (
        "When I travel I prefer cheap hostels, I'd rather spend the money on food.",
        "Where should I stay on my trip to Lisbon?",
    ),
    ("I avoid caffeine after 2pm because it ruins my sleep.", "What could I drink in the afternoon to stay alert?"),
    ("I'm on a Mac and I much prefer keyboard shortcuts to the mouse.", "Which text editor would suit me?"),
]

UPDATES = [
    (
        ["My commute is about 25 minutes by bus.", "Since we moved, my commute is 50 minutes by train now."],
        "How long is my commute?",
    ),
    (
        ["I'm reading Dune at the moment.", "Finished Dune! Now I'm halfway through The Left Hand of Darkness."],
        "What book am I reading right now?",
    ),
    (
        ["My 5k personal best is 27 minutes.", "New 5k personal best this morning: 24:10!"],
        "What is my current 5k personal best?",
    ),
    (
        ["I have two cats, Miso and Tofu.", "We adopted a third cat last week, her name is Tempura."],
        "How many cats do I have?",
    ),
    (
        ["I'm a junior analyst at Carver & Lowe.", "I got promoted to senior analyst at Carver & Lowe last week."],
        "What is my job title now?",
    ),
    (
        ["My rent is $1,450 a month.", "The landlord raised my rent to $1,600 a month starting next month."],
        "How much rent do I pay now?",
    ),
    (
        ["I'm learning Spanish on Duolingo, I'm on a 40-day streak.", "My Duolingo Spanish streak just hit 200 days."],
        "How long is my Duolingo streak?",
    ),
    (
        ["My emergency fund goal is $5,000.", "I decided to raise my emergency fund target to $8,000."],
        "What is my emergency fund target at the moment?",
    ),
]

AGGREGATES = [
    (
        [
            "I've started guitar lessons on Tuesday evenings.",
            "I bought a ukulele at the flea market today.",
            "I'm back to practicing piano every morning.",
        ],
        "How many musical instruments am I playing these days?",
    ),
    (
        [
            "Just got back from two weeks in Japan.",
            "Spent a lovely week in Portugal in May.",
            "We went to Mexico City over Easter.",
        ],
        "How many countries have I visited this year?",
    ),
    (
        [
            "I repotted my monstera yesterday.",
            "I bought a fiddle-leaf fig for the living room.",
            "My snake plant is finally growing new leaves.",
        ],
        "Which plants do I have at home?",
    ),
    (
        [
            "I bought a new bike helmet for $60.",
            "Had the bike chain replaced for $35.",
            "Got front and rear bike lights for $25.",
        ],
        "How much have I spent on bike gear in total?",
    ),
    (
        [
            "Went to a Radiohead concert on Friday.",
            "We finally saw Hamilton on Broadway.",
            "Saw a stand-up comedy show downtown last night.",
        ],
        "What live shows have I been to recently?",
    ),
    (
        [
            "I enrolled in an online Python course.",
            "I signed up for a six-week pottery workshop.",
            "I started an evening photography class.",
        ],
        "How many courses or classes have I signed up for?",
    ),
    (
        [
            "My brother Tom stayed with us for the weekend.",
            "My parents came to visit for a few days.",
            "My cousin Ana came over for dinner.",
        ],
        "Which of my relatives have visited me?",
    ),
    (
        [
            "I saw the dermatologist about a rash.",
            "Went to the dentist for a cleaning today.",
            "Had my first physical therapy session for my knee.",
        ],
        "How many different medical appointments have I had?",
    ),
]

TEMPORAL = [
    (
        ["I bought new running shoes today.", "Dentist appointment this morning, no cavities!"],
        "How many days before my dentist appointment did I buy the running shoes?",
    ),
    (
        ["Today I signed the lease for the new apartment.", "Moving day today, boxes everywhere."],
        "How many days passed between signing the lease and moving in?",
    ),
    (
        ["Today was my first day at the new job.", "Had my probation review today, it went well."],
        "How many days after starting the new job was my probation review?",
    ),
    (
        ["I planted the tomato seedlings on the balcony today.", "Picked the first ripe tomato today!"],
        "How long after planting the tomatoes did I pick the first ripe one?",
    ),
    (
        ["Booked our flights to Iceland today.", "We just landed in Reykjavik!"],
        "How many days before the Iceland trip did I book the flights?",
    ),
    (
        ["Ordered a standing desk today.", "The standing desk was finally delivered."],
        "How many days did the standing desk take to arrive?",
    ),
    (
        ["Started the couch-to-5K program today.", "Finished my first 5K race today!"],
        "How many days from starting couch-to-5K to my first 5K race?",
    ),
    (
        [
            "Sent my novel manuscript to a literary agent today.",
            "The agent replied today and wants the full manuscript!",
        ],
        "How many days did the literary agent take to reply?",
    ),
]
